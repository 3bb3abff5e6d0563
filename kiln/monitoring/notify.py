"""Notifiers (the log, webhooks) and the pass that sends the outbox's due notifications.

A notifier is one method, ``send(alert, event)``, that returns when the channel took the
notification and raises :class:`~kiln.errors.NotifyError` when it did not. :func:`deliver_due`
sends the due deliveries of one pipeline's alerts outside any transaction (a slow webhook never
holds the database), claiming each one first so that two monitors never send it twice, and
records the outcome: a failure leaves the delivery pending with a later attempt time (30 s,
doubled per failure, at most an hour), and the channel's other due deliveries wait with it
untried, so a channel that is down costs one try per pass, is retried on later passes, and the
notification is never lost. The pass itself never raises because a channel failed.

A notification describes the episode as it is when it is sent: one that waited for a channel
carries the latest figures and level, not those of the window that queued it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import httpx

from kiln.config.monitor import LogChannel, WebhookChannel
from kiln.errors import NotifyError
from kiln.monitoring.alerts import ESCALATED
from kiln.stores.metadata import UnitOfWork
from kiln.stores.metadata.alerts import AlertRecord
from kiln.stores.metadata.outbox import DeliveryRecord

__all__ = [
    "DeliveryReport",
    "Event",
    "LogNotifier",
    "Notifier",
    "WebhookNotifier",
    "channel_key",
    "deliver_due",
    "notifier_for",
    "payload",
    "summary_line",
]

log = logging.getLogger("kiln.alerts")

Event = Literal["opened", "escalated", "resolved"]
UowFactory = Callable[[], AbstractContextManager[UnitOfWork]]
_LEASE_MARGIN = timedelta(seconds=60)
_KEY_DISPLAY = 400
"""Characters of a webhook's key shown before its hash (the column holds 500, with ``#alert``)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Notifier(Protocol):
    key: str
    """The channel key its deliveries are queued under (:func:`channel_key`)."""

    def send(self, alert: AlertRecord, event: Event) -> None:
        """Return once the channel took the notification; raise NotifyError otherwise."""
        ...

    def lease(self) -> timedelta:
        """The longest one ``send`` can take: a claimed delivery is due again after it."""
        ...


def channel_key(channel: LogChannel | WebhookChannel) -> str:
    """``log``, or the webhook's masked URL and a short hash of its full URL and headers, e.g.
    ``https://hooks.example/x?… [a1b2c3d4]``: what the outbox stores and shows.

    The display keeps the scheme, host, port and the path's first segment; the rest of the
    path (Slack puts its secret there), the query and the user are shown as ``…`` and never
    stored. The hash tells apart webhooks that differ only in what is masked (a ``?token=``,
    a header): each is its own channel, notified on its own."""
    if isinstance(channel, LogChannel):
        return "log"
    url = httpx.URL(str(channel.url))
    path = url.raw_path.decode("ascii").partition("?")[0]  # still %-encoded: never a "#"
    head, *rest = path.lstrip("/").split("/", 1)
    shown = f"{url.scheme}://{url.netloc.decode('ascii').rpartition('@')[2]}/{head}"
    shown += ("/…" if rest and rest[0] else "") + ("?…" if url.query else "")
    headers = sorted((k.lower(), v) for k, v in channel.headers.items())
    full = json.dumps([str(url), headers], separators=(",", ":"))
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{shown[:_KEY_DISPLAY]} [{digest}]"


def notifier_for(channel: LogChannel | WebhookChannel) -> Notifier:
    if isinstance(channel, LogChannel):
        return LogNotifier()
    return WebhookNotifier(channel)


def summary_line(alert: AlertRecord, event: Event) -> str:
    """One line that says what happened, where, and how much; it starts with the alert's id,
    which `kiln alerts ack ID` takes."""
    head = f"[kiln] alert #{alert.id} {alert.pipeline}: {alert.check}"
    if alert.kind == "budget":  # checked once per monitor pass, not per window: its message
        if event == "resolved":
            return (
                f"{head} resolved: the month's forecast is back within the budget (last over:"
                f" {alert.message})"
            )
        what = "escalated to ALERT" if event == "escalated" else f"{alert.level.upper()} opened"
        return f"{head} {what}: {alert.message}"
    if event == "resolved":
        since = f" (open since {alert.opened_at:%Y-%m-%d %H:%M} UTC)" if alert.opened_at else ""
        peak = alert.details.get("peak_value")
        worst = f", worst {alert.details.get('peak_level')} {peak:.4g}" if peak is not None else ""
        return (
            f"{head} resolved in the window of {alert.last_window:%Y-%m-%d %H:%M} UTC{since}"
            f" after {alert.streak} window(s) over the threshold{worst}"
        )
    figure = ""
    if alert.value is not None:
        over = f" >= {alert.threshold:.4g}" if alert.threshold is not None else ""
        figure = f" {alert.value:.4g}{over},"
    what = "escalated to ALERT" if event == "escalated" else f"{alert.level.upper()} opened"
    return (
        f"{head} {what}:{figure} {alert.streak} window(s) in a row since"
        f" {alert.first_window:%Y-%m-%d %H:%M} UTC - {alert.message}"
    )


def payload(alert: AlertRecord, event: Event) -> dict[str, Any]:
    """The webhook's JSON: Slack's incoming-webhook ``text``, and the alert under ``kiln``."""
    return {
        "text": summary_line(alert, event),
        "kiln": {
            "alert_id": alert.id, "event": event, "pipeline": alert.pipeline,
            "check": alert.check, "kind": alert.kind, "level": alert.level,
            "status": alert.status, "value": alert.value, "threshold": alert.threshold,
            "message": alert.message, "streak": alert.streak,
            "window": {"first": alert.first_window.isoformat(),
                       "last": alert.last_window.isoformat()},
            "opened_at": alert.opened_at.isoformat() if alert.opened_at else None,
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
            "segment": alert.details.get("segment"), "feature": alert.details.get("feature"),
        },
    }  # fmt: skip


class LogNotifier:
    """A warning line on the ``kiln.alerts`` logger (never fails)."""

    key = "log"

    def send(self, alert: AlertRecord, event: Event) -> None:
        log.warning("%s", summary_line(alert, event))

    def lease(self) -> timedelta:
        return _LEASE_MARGIN


class WebhookNotifier:
    """A JSON POST; 2xx is delivered. Timeouts, connection errors, 5xx, 408 and 429 are tried
    again up to ``retries`` times in one call (pausing ``pause`` s, doubled each time); any
    other answer fails at once. A failure raises NotifyError naming the URL (without its
    credentials) and what went wrong."""

    def __init__(self, channel: WebhookChannel, *, pause: float = 0.5) -> None:
        self.channel = channel
        self.key = channel_key(channel)
        self.pause = pause
        self._timeout = channel.timeout.total_seconds()

    def lease(self) -> timedelta:
        tries = self.channel.retries + 1
        pauses = sum(self.pause * 2**i for i in range(self.channel.retries))
        return timedelta(seconds=self._timeout * tries + pauses) + _LEASE_MARGIN

    def send(self, alert: AlertRecord, event: Event) -> None:
        body = payload(alert, event)
        tries = self.channel.retries + 1
        problem = ""
        with httpx.Client(timeout=self._timeout, headers=self.channel.headers) as client:
            for attempt in range(tries):
                if attempt:
                    time.sleep(self.pause * 2 ** (attempt - 1))
                problem, again = self._post(client, body)
                if not problem:
                    return
                if not again:
                    break
        raise NotifyError(
            f"webhook {self.key} did not take the {event} notification of alert {alert.id}"
            f" ({alert.pipeline} {alert.check}) after {attempt + 1} attempt(s): {problem}",
            hint="it stays in the outbox and is sent again on a later pass; check the URL and"
            " that the receiver is up (`kiln alerts list` shows the alert)",
        )

    def _post(self, client: httpx.Client, body: dict[str, Any]) -> tuple[str, bool]:
        """('' , _) when delivered, else (what went wrong, whether trying again may help)."""
        try:
            response = client.post(str(self.channel.url), json=body)
        except httpx.TimeoutException:
            return f"no answer within {self._timeout:g} s (timeout)", True
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {_masked(str(e), str(self.channel.url), self.key)}", True
        if response.is_success:
            return "", False
        text = " ".join(response.text.split())[:200]
        again = response.status_code >= 500 or response.status_code in (408, 429)
        return f"answered HTTP {response.status_code}" + (f": {text}" if text else ""), again


def _masked(text: str, url: str, key: str) -> str:
    return text.replace(url, key) if url != key else text


@dataclass
class DeliveryReport:
    """What one pass over the outbox did."""

    delivered: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    """Deliveries that failed this pass (still pending, retried later), with the error."""
    postponed: list[int] = field(default_factory=list)
    """Due deliveries not tried because their channel had failed earlier in the pass (still
    pending, tried with the failed one on a later pass)."""
    taken: int = 0
    """Due deliveries another sender claimed first."""

    @property
    def attempted(self) -> int:
        return len(self.delivered) + len(self.failed)


def deliver_due(
    uow_factory: UowFactory,
    pipeline: str,
    channels: Sequence[LogChannel | WebhookChannel],
    *,
    clock: Callable[[], datetime] = _utcnow,
    limit: int = 100,
    notifiers: Mapping[str, Notifier] | None = None,
) -> DeliveryReport:
    """Send the due deliveries of ``pipeline``'s alerts on its configured ``channels`` (up to
    ``limit``); deliveries of other channels or pipelines wait for a sender that has them.
    Never raises because a channel failed.

    A channel is tried once per pass: after its first failure, its other due deliveries are
    postponed untried to the failed one's next attempt (a webhook that is down costs one
    timeout per pass, not one per notification). ``clock`` is read for each claim and each
    outcome, so a lease starts when its send does, however long the pass has run.

    ``uow_factory`` opens a unit of work (``store.unit_of_work``); ``notifiers`` replaces the
    notifiers built from ``channels``, by channel key."""
    routes: dict[str, Notifier] = {channel_key(c): notifier_for(c) for c in channels}
    routes |= dict(notifiers or {})
    report = DeliveryReport()
    if not routes:
        return report
    keys = [*routes, *(k + ESCALATED for k in routes)]
    with uow_factory() as uow:
        due = uow.outbox.due(clock(), channels=keys, limit=limit, pipeline=pipeline)
    down: set[str] = set()
    for i, delivery in enumerate(due):
        base, escalated = _split(delivery.channel)
        if base in down:
            continue
        notifier = routes[base]
        with uow_factory() as uow:
            at = clock()
            claimed = uow.outbox.claim(delivery.id, at, at + notifier.lease())
            alert = None if claimed is None else uow.alerts.get(delivery.alert_id)
        if alert is None:
            report.taken += 1
            continue
        error = _send(notifier, alert, "escalated" if escalated else delivery.event, delivery)
        with uow_factory() as uow:
            if error is None:
                uow.outbox.delivered(delivery.id, clock())
                report.delivered.append(delivery.id)
                continue
            failed = uow.outbox.retry_later(delivery.id, clock(), error)
            report.failed[delivery.id] = error
            rest = [d.id for d in due[i + 1 :] if _split(d.channel)[0] == base]
            if rest and failed.next_attempt_at is not None:
                reason = f"not tried: {base} failed on delivery {delivery.id} in the same pass"
                report.postponed += uow.outbox.postpone(
                    rest, clock(), failed.next_attempt_at, reason
                )
        down.add(base)
    return report


def _send(notifier: Notifier, alert: AlertRecord, event: Event, d: DeliveryRecord) -> str | None:
    """None when delivered, else the error (a notifier's own bug included: the pass goes on,
    and the delivery is retried like any failure)."""
    try:
        notifier.send(alert, event)
    except NotifyError as e:
        log.warning("%s", e.message)
        return e.message
    except Exception as e:  # a broken notifier must not stop the pass or lose the delivery
        log.exception("notifier %s failed on delivery %d", notifier.key, d.id)
        return f"{type(e).__name__}: {e}"
    return None


def _split(channel: str) -> tuple[str, bool]:
    if channel.endswith(ESCALATED):
        return channel[: -len(ESCALATED)], True
    return channel, False
