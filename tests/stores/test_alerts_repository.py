"""The alert repository contract, on every backend: one live episode per check (racing
monitors end with one), compare-and-set on the window, the outbox's claims and backoff, and
acknowledgements that are audited."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kiln.errors import NotFoundError
from kiln.stores import MetadataStore
from kiln.stores.metadata.alerts import MAX_BACKOFF, backoff

P = "flights-delay"
CHECK = "drift:temp:EWR"
W1 = datetime(2013, 10, 1, tzinfo=UTC)
W2 = W1 + timedelta(days=1)
W3 = W2 + timedelta(days=1)
NOW = datetime(2013, 10, 4, 1, tzinfo=UTC)
RACERS = 3
TIMEOUT = 60


def start(store: MetadataStore, check: str = CHECK, window: datetime = W1) -> Any:
    with store.unit_of_work() as uow:
        return uow.alerts.start(P, check, "drift", "warn", window, 0.14, 0.1, "psi 0.14")


def test_an_episode_starts_pending_and_a_second_live_one_is_refused(store: MetadataStore) -> None:
    first = start(store)
    assert first is not None
    assert (first.status, first.streak, first.first_window, first.last_window) == (
        "pending", 1, W1, W1,
    )  # fmt: skip
    with store.unit_of_work() as uow:
        # the savepoint keeps the transaction usable after the refused insert
        assert uow.alerts.start(P, CHECK, "drift", "alert", W2, 0.3, 0.25, "psi 0.3") is None
        other = uow.alerts.start(P, "drift:temp:JFK", "drift", "warn", W2, 0.12, 0.1, "psi")
        assert other is not None
        assert uow.alerts.live(P, CHECK) == first
        assert uow.alerts.live("other-pipeline", CHECK) is None
    with store.unit_of_work() as uow:
        assert uow.alerts.resolve(first.id, W2, NOW) is not None
        assert uow.alerts.live(P, CHECK) is None
        again = uow.alerts.start(P, CHECK, "drift", "warn", W3, 0.2, 0.1, "psi 0.2")
        assert again is not None and again.id != first.id  # a resolved episode does not count
        assert uow.alerts.latest(P, CHECK) == again


def test_extend_open_and_resolve_are_compare_and_set_on_the_window(store: MetadataStore) -> None:
    first = start(store)
    with store.unit_of_work() as uow:
        extend = uow.alerts.extend
        grown = extend(first.id, W2, "alert", 0.31, 0.25, "psi 0.31", {"segment": "EWR"})
        assert grown is not None and (grown.streak, grown.level, grown.value) == (2, "alert", 0.31)
        assert extend(first.id, W2, "alert", 0.31, 0.25, "again", {}) is None  # seen
        assert extend(first.id, W1, "alert", 0.31, 0.25, "older", {}) is None  # older
        opened = uow.alerts.open(first.id, NOW)
        assert opened is not None and opened.status == "open" and opened.opened_at == NOW
        assert uow.alerts.open(first.id, NOW) is None  # not pending any more
        assert uow.alerts.resolve(first.id, W2, NOW) is None  # W2 was seen
        done = uow.alerts.resolve(first.id, W3, NOW)
        assert done is not None and (done.status, done.resolved_at, done.last_window) == (
            "resolved", NOW, W3,
        )  # fmt: skip
        assert uow.alerts.extend(first.id, W3 + timedelta(days=1), "warn", 1, 1, "", {}) is None
        assert uow.alerts.get(first.id).streak == 2


def test_list_filters_and_unknown_ids(store: MetadataStore) -> None:
    a = start(store, "errors", W1)
    b = start(store, "latency:p99", W2)
    with store.unit_of_work() as uow:
        uow.alerts.open(b.id, NOW)
        assert [x.id for x in uow.alerts.list()] == [b.id, a.id]  # latest window first
        assert [x.id for x in uow.alerts.list(P, status=["open"])] == [b.id]
        assert uow.alerts.list("weather") == []
        assert len(uow.alerts.list(limit=1)) == 1
        with pytest.raises(NotFoundError, match="no alert 999") as e:
            uow.alerts.get(999)
        assert "kiln alerts list" in str(e.value)
        with pytest.raises(ValueError, match="invalid status"):
            uow.alerts.list(status=["closed"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="invalid kind"):
            uow.alerts.start(P, "x", "weather", "warn", W1, 1.0, 1.0, "")
        with pytest.raises(ValueError, match="timezone-aware"):
            uow.alerts.start(P, "x", "drift", "warn", datetime(2013, 1, 1), 1.0, 1.0, "")
        counts = uow.alerts.open_counts()
    assert [(c.pipeline, c.kind, c.level, c.count) for c in counts] == [(P, "drift", "warn", 1)]


def test_ack_is_audited_and_allowed_on_any_status(store: MetadataStore) -> None:
    a = start(store)
    with store.unit_of_work() as uow:
        uow.alerts.resolve(a.id, W2, NOW)
        acked = uow.alerts.ack(a.id, "alice", "known: the October weather")
        with pytest.raises(NotFoundError):
            uow.alerts.ack(404, "alice")
        with pytest.raises(ValueError, match="actor"):
            uow.alerts.ack(a.id, "  ")
    assert (acked.acked_by, acked.ack_note, acked.status) == (
        "alice", "known: the October weather", "resolved",
    )  # fmt: skip
    assert acked.acked_at is not None
    with store.read() as uow:
        events = uow.audit.list(P)
    assert [(e.actor, e.action, e.reason) for e in events] == [
        ("alice", "ack_alert", "known: the October weather")
    ]
    assert events[0].details["alert"] == a.id and events[0].details["check"] == CHECK


def test_the_outbox_queues_once_claims_once_and_backs_off(store: MetadataStore) -> None:
    a = start(store)
    with store.unit_of_work() as uow:
        queued = uow.alerts.enqueue(a.id, "opened", ["log", "http://hook/x", "log"], NOW)
        assert [d.channel for d in queued] == ["log", "http://hook/x"]
        assert uow.alerts.enqueue(a.id, "opened", ["log"], NOW) == []  # once per channel
        assert uow.alerts.pending_deliveries() == 2
        assert uow.alerts.due(NOW - timedelta(seconds=1)) == []
        assert [d.channel for d in uow.alerts.due(NOW, channels=["log"])] == ["log"]
    log, hook = queued
    with store.unit_of_work() as uow:
        claimed = uow.alerts.claim(log.id, NOW, NOW + timedelta(minutes=1))
        assert claimed is not None and claimed.next_attempt_at == NOW + timedelta(minutes=1)
        assert uow.alerts.claim(log.id, NOW, NOW + timedelta(minutes=1)) is None  # taken
        done = uow.alerts.delivered(log.id, NOW)
        assert (done.status, done.attempts, done.delivered_at) == ("delivered", 1, NOW)
        assert uow.alerts.get(a.id).notified_at == NOW
        moment = NOW
        for attempt in range(1, 10):
            failed = uow.alerts.retry_later(hook.id, moment, f"HTTP 500 #{attempt}")
            assert failed.status == "pending" and failed.attempts == attempt
            assert failed.next_attempt_at == moment + backoff(attempt)
            assert failed.last_error == f"HTTP 500 #{attempt}"
        assert failed.next_attempt_at == moment + MAX_BACKOFF  # capped at an hour
        assert [d.id for d in uow.alerts.due(moment + MAX_BACKOFF)] == [hook.id]
        assert uow.alerts.pending_deliveries() == 1
        assert [d.status for d in uow.alerts.deliveries(a.id)] == ["delivered", "pending"]
    assert backoff(1) == timedelta(seconds=30) and backoff(2) == timedelta(seconds=60)


def test_a_second_monitor_waits_for_the_first_and_reads_its_episode(
    store: MetadataStore,
) -> None:
    """Two units of work start the same check's episode at once: the second waits for the
    first (SQLite: the write lock; PostgreSQL: the unique index's row), is refused, and reads
    the first one's episode."""
    inserted, release, done = threading.Event(), threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def first() -> None:
        with store.unit_of_work() as uow:
            results["first"] = uow.alerts.start(P, CHECK, "drift", "warn", W1, 0.1, 0.1, "a")
            inserted.set()
            release.wait(30)

    def second() -> None:
        with store.unit_of_work() as uow:
            results["second"] = uow.alerts.start(P, CHECK, "drift", "warn", W1, 0.1, 0.1, "b")
            results["read"] = uow.alerts.live(P, CHECK)
        done.set()

    a = threading.Thread(target=first)
    a.start()
    assert inserted.wait(30)
    b = threading.Thread(target=second)
    b.start()
    assert not done.wait(1.0)  # it waits for the first unit of work
    release.set()
    a.join(30)
    b.join(30)
    assert results["first"] is not None and results["second"] is None
    assert results["read"] == results["first"]
    with store.read() as uow:
        assert len(uow.alerts.list(P)) == 1


def start_worker(url: str, name: str, barrier: Any, out: Any) -> None:
    store = MetadataStore(url)
    try:
        barrier.wait(TIMEOUT)
        with store.unit_of_work() as uow:
            started = uow.alerts.start(P, CHECK, "drift", "warn", W1, 0.1, 0.1, name)
            live = uow.alerts.live(P, CHECK)
        out.put((name, started is not None, None if live is None else live.id))
    finally:
        store.dispose()


@pytest.mark.slow  # spawns three interpreters
def test_monitors_racing_to_start_an_episode_end_with_one(store: MetadataStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(RACERS), ctx.Queue()
    workers = [
        ctx.Process(target=start_worker, args=(store.url, f"m{i}", barrier, out))
        for i in range(RACERS)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
    assert [w.exitcode for w in workers] == [0] * RACERS
    results = [out.get(timeout=TIMEOUT) for _ in range(RACERS)]
    assert sum(won for _, won, _ in results) == 1, results
    with store.read() as uow:
        episodes = uow.alerts.list(P)
    assert len(episodes) == 1
    assert {live for _, _, live in results} == {episodes[0].id}  # every loser read it
