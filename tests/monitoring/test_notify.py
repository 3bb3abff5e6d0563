"""Notifications through the outbox to a real local HTTP receiver (http.server in a thread on
127.0.0.1): delivered once; a 500 retried on the next pass; a receiver that is down (the pass
completes, the notification waits and is delivered once it is up); one that times out."""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kiln.config.monitor import LogChannel, WebhookChannel
from kiln.monitoring.alerts import update_alerts
from kiln.monitoring.findings import Finding, Level
from kiln.monitoring.notify import DeliveryReport, Event, channel_key, deliver_due
from kiln.stores import MetadataStore
from kiln.stores.metadata.alerts import AlertRecord
from kiln.stores.metadata.outbox import backoff

P = "flights-delay"
DAY = timedelta(days=1)
START = datetime(2013, 11, 1, tzinfo=UTC)
NOW = START + 2 * DAY


class Receiver:
    """A webhook receiver: answers each POST with the next scripted status (200 once the
    script is used up); ``"sleep"`` holds the request past any client timeout first, and a
    callable is called (while the request is open) for the status."""

    def __init__(
        self, script: list[int | str | Callable[[], int]] | None = None, port: int = 0
    ) -> None:
        self.script = list(script or [])
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = receiver.script.pop(0) if receiver.script else 200
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
                )
                if callable(answer):
                    answer = answer()
                if answer == "sleep":
                    receiver.release.wait(10)
                    answer = 200
                self.send_response(int(answer))
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": false, "error": "receiver said no"}' if answer != 200
                                 else b"ok")  # fmt: skip

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    """SQLite: the backends' share of the outbox is tested in tests/stores."""
    s = MetadataStore(f"sqlite:///{tmp_path / 'kiln.db'}", create=True)
    s.upgrade()
    yield s
    s.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hook(url: str, **more: Any) -> WebhookChannel:
    return WebhookChannel.model_validate({"url": url, "timeout": 2, "retries": 0, **more})


def open_alert(
    store: MetadataStore,
    channels: list[LogChannel | WebhookChannel],
    level: Level = "alert",
    check: str = "performance:mae:JFK",
    pipeline: str = P,
) -> AlertRecord:
    """An alert opened by a real window's finding (monitor.consecutive 1)."""
    finding = Finding(
        check, "performance", level, 19.5, 15.0,
        "live mae 19.5 vs 15.0 at training (+30%) in JFK", segment="JFK",
    )  # fmt: skip
    with store.unit_of_work() as uow:
        (change,) = update_alerts(
            uow, pipeline, START, START + DAY, [finding], 1,
            [channel_key(c) for c in channels], NOW,
        )  # fmt: skip
    return change.alert


def send(
    store: MetadataStore,
    channels: list[LogChannel | WebhookChannel],
    now: datetime | Clock,
    pipeline: str = P,
    **more: Any,
) -> DeliveryReport:
    """One pass over the outbox for ``pipeline`` at ``now`` (a fixed time or a Clock)."""
    clock = now if isinstance(now, Clock) else Clock(now)
    return deliver_due(store.unit_of_work, pipeline, channels, clock=clock, **more)


class Clock:
    """The sender's clock: it stands still unless a test moves it (``clock.now += ...``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def statuses(store: MetadataStore, alert: AlertRecord) -> list[tuple[str, str, int]]:
    with store.read() as uow:
        return [(d.event, d.status, d.attempts) for d in uow.outbox.deliveries(alert.id)]


def test_delivered_once_to_the_webhook_and_the_log(
    store: MetadataStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    channels = [LogChannel(), hook(receiver.url())]
    alert = open_alert(store, channels)
    with caplog.at_level(logging.WARNING, logger="kiln.alerts"):
        report = send(store, channels, NOW)
    assert len(report.delivered) == 2 and report.failed == {}
    assert send(store, channels, NOW + DAY).attempted == 0
    (request,) = receiver.requests
    body = request["json"]
    assert body["text"].startswith(
        f"[kiln] alert #{alert.id} flights-delay: performance:mae:JFK ALERT opened:"
    )
    assert "19.5 >= 15," in body["text"] and "\n" not in body["text"]
    kiln = body["kiln"]
    assert (kiln["alert_id"], kiln["event"], kiln["pipeline"], kiln["check"]) == (
        alert.id, "opened", P, "performance:mae:JFK",
    )  # fmt: skip
    assert (kiln["kind"], kiln["level"], kiln["value"], kiln["threshold"]) == (
        "performance", "alert", 19.5, 15.0,
    )  # fmt: skip
    assert kiln["window"]["first"] == START.isoformat() and kiln["segment"] == "JFK"
    logged = [r.getMessage() for r in caplog.records if r.name == "kiln.alerts"]
    assert logged == [body["text"]]
    assert statuses(store, alert) == [("opened", "delivered", 1)] * 2
    with store.read() as uow:
        assert uow.alerts.get(alert.id).notified_at == NOW
        assert uow.outbox.pending_deliveries() == 0


def test_a_500_is_retried_on_the_next_pass_and_delivered_once(
    store: MetadataStore, receiver: Receiver
) -> None:
    receiver.script = [500]
    channel = hook(receiver.url())
    alert = open_alert(store, [channel])
    first = send(store, [channel], NOW)
    (error,) = first.failed.values()
    assert "answered HTTP 500" in error and "receiver said no" in error
    assert statuses(store, alert) == [("opened", "pending", 1)]
    assert send(store, [channel], NOW).attempted == 0  # not due yet
    second = send(store, [channel], NOW + backoff(1))
    assert len(second.delivered) == 1 and second.failed == {}
    assert send(store, [channel], NOW + DAY).attempted == 0
    assert len(receiver.requests) == 2
    assert statuses(store, alert) == [("opened", "delivered", 2)]


def test_retries_within_one_call_for_a_5xx_but_not_for_a_404(
    store: MetadataStore, receiver: Receiver
) -> None:
    receiver.script = [503, 502]
    channel = hook(receiver.url(), retries=2)
    open_alert(store, [channel])
    report = send(store, [channel], NOW)
    assert len(report.delivered) == 1 and len(receiver.requests) == 3

    receiver.script = [404]
    gone = hook(receiver.url("/gone"), retries=2)
    alert = open_alert(store, [gone], check="performance:mae:LGA")
    (error,) = send(store, [gone], NOW).failed.values()
    assert "after 1 attempt(s): answered HTTP 404" in error
    assert len(receiver.requests) == 4  # a 404 is not retried within the call
    assert statuses(store, alert) == [("opened", "pending", 1)]


def test_a_receiver_that_is_down_does_not_stop_the_pass_and_gets_it_later(
    store: MetadataStore,
) -> None:
    port = free_port()
    down = hook(f"http://127.0.0.1:{port}/hook")
    channels = [down, LogChannel()]
    alert = open_alert(store, channels)
    report = send(store, channels, NOW)
    assert len(report.delivered) == 1  # the log got it; the pass went on
    (error,) = report.failed.values()
    assert "ConnectError" in error and f"127.0.0.1:{port}/hook" in error
    assert sorted(statuses(store, alert)) == [("opened", "delivered", 1), ("opened", "pending", 1)]
    later = NOW + backoff(1)
    assert send(store, channels, later).failed  # still down: still waiting
    up = Receiver(port=port)
    try:
        report = send(store, channels, later + backoff(2))
        assert len(report.delivered) == 1
        assert [r["json"]["kiln"]["alert_id"] for r in up.requests] == [alert.id]
    finally:
        up.close()
    assert sorted(statuses(store, alert)) == [
        ("opened", "delivered", 1), ("opened", "delivered", 3),
    ]  # fmt: skip


def test_a_receiver_that_times_out_is_retried_later(store: MetadataStore) -> None:
    slow = Receiver(["sleep"])
    try:
        channel = hook(slow.url(), timeout=0.3)
        alert = open_alert(store, [channel])
        (error,) = send(store, [channel], NOW).failed.values()
        assert "no answer within 0.3 s (timeout)" in error
        assert statuses(store, alert) == [("opened", "pending", 1)]
        slow.release.set()
        report = send(store, [channel], NOW + backoff(1))
        assert len(report.delivered) == 1
    finally:
        slow.close()


def test_credentials_of_the_url_are_used_but_never_stored_or_shown(
    store: MetadataStore, receiver: Receiver
) -> None:
    receiver.script = [500]
    url = f"http://ops:s3cret-pw@127.0.0.1:{receiver.port}/hook?token=t0ken-x"
    channel = hook(url, headers={"X-Team": "pricing"})
    assert re.fullmatch(re.escape(receiver.url()) + r"\?… \[[0-9a-f]{8}\]", channel_key(channel))
    slack = channel_key(hook("https://hooks.slack.com/services/T01/B02/s3cretPath"))
    assert re.fullmatch(r"https://hooks\.slack\.com/services/… \[[0-9a-f]{8}\]", slack)
    alert = open_alert(store, [channel])
    (error,) = send(store, [channel], NOW).failed.values()
    send(store, [channel], NOW + backoff(1))
    with store.read() as uow:
        (delivery,) = uow.outbox.deliveries(alert.id)
    stored = f"{delivery.channel} {delivery.last_error} {error}"
    assert "s3cret" not in stored and "t0ken" not in stored
    request = receiver.requests[-1]
    assert request["path"] == "/hook?token=t0ken-x" and request["headers"]["X-Team"] == "pricing"
    auth = base64.b64encode(b"ops:s3cret-pw").decode()
    assert request["headers"]["Authorization"] == f"Basic {auth}"


class Broken:
    """A notifier with a bug: the pass must go on and keep the delivery."""

    key = "log"

    def send(self, alert: AlertRecord, event: Event) -> None:
        raise RuntimeError("a bug in a notifier")

    def lease(self) -> timedelta:
        return timedelta(minutes=1)


def test_escalation_is_sent_as_its_own_event_and_a_broken_notifier_loses_nothing(
    store: MetadataStore, receiver: Receiver
) -> None:
    channels: list[LogChannel | WebhookChannel] = [hook(receiver.url()), LogChannel()]
    keys = [channel_key(c) for c in channels]
    open_alert(store, channels, level="warn")
    finding = Finding("performance:mae:JFK", "performance", "alert", 25.0, 18.0, "worse")
    with store.unit_of_work() as uow:
        (change,) = update_alerts(uow, P, START + DAY, START + 2 * DAY, [finding], 1, keys, NOW)
    assert change.kind == "escalated"
    report = send(store, channels, NOW, notifiers={"log": Broken()})
    # the log failed once: its other delivery is held back untried, both are kept
    assert len(report.delivered) == 2 and len(report.failed) == 1 and len(report.postponed) == 1
    assert all("RuntimeError: a bug in a notifier" in e for e in report.failed.values())
    texts = [r["json"]["text"] for r in receiver.requests]
    assert [r["json"]["kiln"]["event"] for r in receiver.requests] == ["opened", "escalated"]
    # a notification describes the episode as it is when sent: both carry the latest figure
    assert "ALERT opened: 25 >= 18," in texts[0] and "escalated to ALERT: 25 >= 18," in texts[1]
    with store.read() as uow:
        assert uow.outbox.pending_deliveries() == 2
    assert len(send(store, channels, NOW + backoff(1)).delivered) == 2

    ok = Finding("performance:mae:JFK", "performance", "ok", 14.0, 18.0, "back to normal")
    with store.unit_of_work() as uow:
        (change,) = update_alerts(uow, P, START + 2 * DAY, START + 3 * DAY, [ok], 1, keys, NOW)
    assert change.kind == "resolved"
    report = send(store, channels, NOW + backoff(1))
    assert len(report.delivered) == 2
    resolved = receiver.requests[-1]["json"]
    assert resolved["kiln"]["event"] == "resolved" and resolved["kiln"]["status"] == "resolved"
    assert resolved["text"] == (
        f"[kiln] alert #{change.alert.id} flights-delay: performance:mae:JFK resolved in the"
        " window of 2013-11-03 00:00 UTC"
        " (open since 2013-11-03 00:00 UTC) after 2 window(s) over the threshold, worst alert 25"
    )


def test_two_passes_at_once_send_a_notification_once(store: MetadataStore) -> None:
    """A pass claims a delivery before sending it: a second pass that runs while the first
    is still waiting for the receiver does not send it again."""
    slow = Receiver(["sleep"])
    try:
        channel = hook(slow.url(), timeout=30)
        alert = open_alert(store, [channel])
        reports: list[Any] = []
        first = threading.Thread(target=lambda: reports.append(send(store, [channel], NOW)))
        first.start()
        for _ in range(600):  # until the first pass is inside its POST
            if slow.requests:
                break
            first.join(0.05)
        assert slow.requests
        second = send(store, [channel], NOW)
        assert second.attempted == 0
        slow.release.set()
        first.join(30)
        assert len(reports[0].delivered) == 1 and len(slow.requests) == 1
        assert statuses(store, alert) == [("opened", "delivered", 1)]
    finally:
        slow.close()


class HangUp:
    """A receiver that is down: it takes each connection and hangs up at once (as a crashing
    service behind a port does), counting the connections it was offered."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.05)
        self.port = int(self.socket.getsockname()[1])
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.socket.close()


def test_a_down_receiver_is_tried_once_per_pass_and_gets_every_notification_once_up(
    store: MetadataStore,
) -> None:
    """20 notifications due on a webhook that is down: each pass tries it once (one call,
    with its retries), holds the other 19 back untried, and none is lost."""
    down = HangUp()
    channel = hook(f"http://127.0.0.1:{down.port}/hook", retries=1)
    alerts = [open_alert(store, [channel], check=f"performance:mae:S{i:02d}") for i in range(20)]
    try:
        first = send(store, [channel], NOW)
        assert (len(first.failed), len(first.postponed), first.delivered) == (1, 19, [])
        assert down.connections == 2  # one delivery: the first try and its one retry
        (error,) = first.failed.values()
        assert "after 2 attempt(s)" in error
        assert send(store, [channel], NOW + backoff(1) / 2).attempted == 0  # all wait
        second = send(store, [channel], NOW + backoff(1))
        assert (len(second.failed), len(second.postponed)) == (1, 19)
        assert down.connections == 4
    finally:
        down.close()
    with store.read() as uow:
        held = [d for a in alerts for d in uow.outbox.deliveries(a.id)]
    assert sum(d.attempts for d in held) == 2  # a held-back delivery was not attempted
    assert all(d.status == "pending" for d in held)
    assert sum("not tried" in (d.last_error or "") for d in held) == 19
    up = Receiver(port=down.port)
    try:
        report = send(store, [channel], NOW + backoff(1) + backoff(2))
        assert len(report.delivered) == 20 and report.failed == {}
        assert send(store, [channel], NOW + DAY).attempted == 0
        sent = [r["json"]["kiln"]["alert_id"] for r in up.requests]
    finally:
        up.close()
    assert sorted(sent) == sorted(a.id for a in alerts)  # each one, once


def test_a_lease_starts_when_its_send_does_however_long_the_pass_has_run(
    store: MetadataStore, receiver: Receiver
) -> None:
    """The first send of a pass takes 10 minutes (the clock moves while the receiver holds
    it); the second delivery is claimed at that time, so its lease (90 s) is not already
    over, and a second pass at that time does not send it again."""
    clock = Clock(NOW)

    def slow() -> int:
        clock.now += timedelta(minutes=10)
        return 200

    receiver.script = [slow, "sleep"]
    channel = hook(receiver.url(), timeout=30)
    first = open_alert(store, [channel], check="performance:mae:JFK")
    second = open_alert(store, [channel], check="performance:mae:LGA")
    reports: list[DeliveryReport] = []
    passing = threading.Thread(target=lambda: reports.append(send(store, [channel], clock)))
    passing.start()
    try:
        for _ in range(600):  # until the pass is inside its second POST
            if len(receiver.requests) == 2:
                break
            passing.join(0.05)
        assert len(receiver.requests) == 2
        assert send(store, [channel], clock).attempted == 0
    finally:
        receiver.release.set()
        passing.join(30)
    assert len(reports[0].delivered) == 2 and len(receiver.requests) == 2
    with store.read() as uow:
        (done,) = uow.outbox.deliveries(first.id)
        (claimed,) = uow.outbox.deliveries(second.id)
    assert done.delivered_at == NOW + timedelta(minutes=10)
    assert claimed.next_attempt_at == NOW + timedelta(minutes=10, seconds=90)


def test_webhooks_that_differ_only_in_the_query_or_headers_are_notified_each(
    store: MetadataStore, receiver: Receiver
) -> None:
    channels: list[LogChannel | WebhookChannel] = [
        hook(receiver.url("/hook?token=aaa")),
        hook(receiver.url("/hook?token=bbb")),
        hook(receiver.url("/hook?token=bbb"), headers={"Authorization": "Bearer ccc"}),
    ]
    keys = [channel_key(c) for c in channels]
    assert len(set(keys)) == 3 and not any(s in k for k in keys for s in ("aaa", "bbb", "ccc"))
    alert = open_alert(store, channels)
    report = send(store, channels, NOW)
    assert len(report.delivered) == 3 and report.failed == {}
    got = sorted((r["path"], r["headers"].get("Authorization", "")) for r in receiver.requests)
    assert got == [
        ("/hook?token=aaa", ""), ("/hook?token=bbb", ""), ("/hook?token=bbb", "Bearer ccc"),
    ]  # fmt: skip
    assert statuses(store, alert) == [("opened", "delivered", 1)] * 3


def test_a_pass_sends_only_the_notifications_of_its_own_pipeline(
    store: MetadataStore, receiver: Receiver
) -> None:
    """Two pipelines whose webhooks differ in a header, and that share the log: each pass
    sends its own pipeline's alerts only, with its own webhook's URL and headers."""
    a = [hook(receiver.url(), headers={"X-Team": "delays"}), LogChannel()]
    b = [hook(receiver.url(), headers={"X-Team": "fares"}), LogChannel()]
    delays = open_alert(store, a, pipeline="flights-delay")
    fares = open_alert(store, b, pipeline="taxi-fares")
    report = send(store, b, NOW, pipeline="taxi-fares")
    assert len(report.delivered) == 2 and report.failed == {}
    assert statuses(store, delays) == [("opened", "pending", 0)] * 2
    assert statuses(store, fares) == [("opened", "delivered", 1)] * 2
    assert len(send(store, a, NOW, pipeline="flights-delay").delivered) == 2
    assert statuses(store, delays) == [("opened", "delivered", 1)] * 2
    got = [(r["json"]["kiln"]["pipeline"], r["headers"]["X-Team"]) for r in receiver.requests]
    assert got == [("taxi-fares", "fares"), ("flights-delay", "delays")]
