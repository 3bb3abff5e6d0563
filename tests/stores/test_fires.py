"""The schedule firings contract, on every backend: a firing is claimed once, and every later
change of hands (retry, takeover) is won by one scheduler only."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kiln.errors import NotFoundError
from kiln.stores import MetadataStore

DUE = datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
PATH = "/pipelines/flights/kiln.yaml"
RACERS = 3
TIMEOUT = 60


def utc(moment: datetime | None) -> bool:
    return moment is not None and moment.utcoffset() == timedelta(0)


def test_a_firing_is_claimed_once(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        fire = uow.fires.claim("flights", DUE, PATH, "host-a:1")
        again = uow.fires.claim("flights", DUE, PATH, "host-b:2")  # the savepoint keeps the tx
        other = uow.fires.claim("flights", DUE + timedelta(minutes=1), PATH, "host-b:2")
    assert fire is not None and again is None and other is not None
    assert (fire.status, fire.attempt, fire.scheduler, fire.run_id) == (
        "running", 1, "host-a:1", None,
    )  # fmt: skip
    assert fire.due_at == DUE and utc(fire.claimed_at) and fire.finished_at is None
    with store.unit_of_work() as uow:
        assert uow.fires.claim("flights", DUE, PATH, "host-c:3") is None
        assert uow.fires.last_due("flights") == DUE + timedelta(minutes=1)
        assert uow.fires.last_due("weather") is None
        assert utc(uow.fires.last_due("flights"))
        listed = uow.fires.list()
    assert [f.due_at for f in listed] == [DUE + timedelta(minutes=1), DUE]


def test_a_skipped_firing_is_visible_and_cannot_be_claimed(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        skipped = uow.fires.skip("flights", DUE, PATH, "host-a:1", "missed by 3 hours")
        assert uow.fires.skip("flights", DUE, PATH, "host-b:2", "missed") is None
        assert uow.fires.claim("flights", DUE, PATH, "host-b:2") is None
        assert uow.fires.last_due("flights") == DUE
    assert skipped is not None and skipped.status == "skipped"
    assert skipped.error == "missed by 3 hours" and utc(skipped.finished_at)


def test_finish_and_retry_claims_are_compare_and_set(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        fire = uow.fires.claim("flights", DUE, PATH, "a")
        assert fire is not None
        retry_at = datetime.now(UTC) + timedelta(seconds=60)
        assert uow.fires.finish(fire.id, "retrying", scheduler="b", next_retry_at=retry_at) is None
        waiting = uow.fires.finish(
            fire.id, "retrying", run_id="r1", error="exit 3", next_retry_at=retry_at, scheduler="a"
        )
    assert waiting is not None
    assert (waiting.status, waiting.run_id, waiting.error) == ("retrying", "r1", "exit 3")
    assert waiting.next_retry_at == retry_at and waiting.finished_at is not None

    with store.unit_of_work() as uow:
        assert uow.fires.due_retries(retry_at - timedelta(seconds=1)) == []
        assert [f.id for f in uow.fires.due_retries(retry_at)] == [fire.id]
        # too early, wrong attempt: refused
        assert uow.fires.claim_retry(fire.id, 1, "b", retry_at - timedelta(seconds=1)) is None
        assert uow.fires.claim_retry(fire.id, 2, "b", retry_at) is None
        second = uow.fires.claim_retry(fire.id, 1, "b", retry_at)
        assert uow.fires.claim_retry(fire.id, 1, "c", retry_at) is None  # b won
    assert second is not None
    assert (second.status, second.attempt, second.scheduler) == ("running", 2, "b")
    assert second.next_retry_at is None and second.finished_at is None

    with store.unit_of_work() as uow:
        assert uow.fires.heartbeat(fire.id, "b") and not uow.fires.heartbeat(fire.id, "a")
        assert [f.id for f in uow.fires.running("flights")] == [fire.id]
        done = uow.fires.finish(fire.id, "failed", run_id="r2", error="boom", scheduler="b")
        assert uow.fires.finish(fire.id, "succeeded", scheduler="b") is None  # no longer running
        assert uow.fires.running("flights") == []
    assert done is not None and (done.status, done.attempt, done.error) == ("failed", 2, "boom")


def test_a_stale_firing_is_taken_over_by_one_scheduler(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        fire = uow.fires.claim("flights", DUE, PATH, "dead:1")
    assert fire is not None
    with store.unit_of_work() as uow:
        assert uow.fires.stale_running(fire.heartbeat_at) == []
        stale = uow.fires.stale_running(fire.heartbeat_at + timedelta(seconds=1))
        assert [f.id for f in stale] == [fire.id]
        taken = uow.fires.take_over_stale(fire.id, stale[0].heartbeat_at, "b:2")
        assert uow.fires.take_over_stale(fire.id, stale[0].heartbeat_at, "c:3") is None
    assert taken is not None and (taken.scheduler, taken.attempt) == ("b:2", 1)
    assert taken.heartbeat_at > fire.heartbeat_at
    with store.unit_of_work() as uow:
        assert not uow.fires.heartbeat(fire.id, "dead:1")  # the dead scheduler has lost it


def test_bad_arguments_are_refused(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        with pytest.raises(ValueError, match="timezone-aware"):
            uow.fires.claim("flights", datetime(2024, 1, 1), PATH, "a")
        fire = uow.fires.claim("flights", DUE, PATH, "a")
        assert fire is not None
        with pytest.raises(ValueError, match="invalid status 'skipped'"):
            uow.fires.finish(fire.id, "skipped")
        with pytest.raises(ValueError, match="next_retry_at"):
            uow.fires.finish(fire.id, "retrying")
        with pytest.raises(NotFoundError, match="no schedule firing 999"):
            uow.fires.finish(999, "failed")
        with pytest.raises(NotFoundError):
            uow.fires.get(999)
        assert uow.fires.get(fire.id) == fire


def claim_worker(url: str, name: str, barrier: Any, results: Any) -> None:
    store = MetadataStore(url)
    try:
        barrier.wait(TIMEOUT)
        with store.unit_of_work() as uow:
            fire = uow.fires.claim("flights", DUE, PATH, name)
        results.put((name, fire is not None))
    finally:
        store.dispose()


def test_schedulers_racing_for_one_firing_one_wins(store: MetadataStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    workers = [
        ctx.Process(target=claim_worker, args=(store.url, f"s{i}", barrier, results))
        for i in range(RACERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIMEOUT)
    assert [w.exitcode for w in workers] == [0] * RACERS
    outcomes = dict(results.get(timeout=TIMEOUT) for _ in range(RACERS))
    winners = [name for name, won in outcomes.items() if won]
    assert len(winners) == 1, outcomes
    with store.unit_of_work() as uow:
        fires = uow.fires.list("flights")
    assert [(f.scheduler, f.status) for f in fires] == [(winners[0], "running")]


def test_serialize_makes_check_and_claim_one_step_across_schedulers(store: MetadataStore) -> None:
    """While one scheduler holds a pipeline's scheduling lock, another waits for it (SQLite: the
    write lock of the unit of work; PostgreSQL: an advisory transaction lock)."""
    holding, release, acquired = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with store.unit_of_work() as uow:
            uow.fires.serialize("flights")
            holding.set()
            release.wait(30)

    def second() -> None:
        with store.unit_of_work() as uow:
            uow.fires.serialize("flights")
            acquired.set()

    a = threading.Thread(target=first)
    a.start()
    assert holding.wait(30)
    b = threading.Thread(target=second)
    b.start()
    assert not acquired.wait(1.0)  # it waits for the first unit of work to end
    release.set()
    assert acquired.wait(30)
    a.join(30)
    b.join(30)
