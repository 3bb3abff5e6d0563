"""The monitor windows contract, on every backend: one row per (pipeline, start, length) even
when monitors race, updated in place when labels arrive, listed oldest first."""

from __future__ import annotations

import math
import multiprocessing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kiln.errors import NotFoundError
from kiln.stores import MetadataStore

DAY = datetime(2013, 7, 1, tzinfo=UTC)
SECONDS = 86_400
RACERS = 3
TIMEOUT = 60


def _store(store: MetadataStore, start: datetime, rows: int = 10, **summary: Any) -> Any:
    with store.unit_of_work() as uow:
        return uow.windows.store(
            "flights", start, start + timedelta(days=1), SECONDS, rows, "ok", None,
            {"rows": rows, **summary},
        )  # fmt: skip


def test_a_window_is_stored_once_and_listed_oldest_first(store: MetadataStore) -> None:
    first, stored = _store(store, DAY, rows=10, by="a")
    again, stored_again = _store(store, DAY, rows=99, by="b")
    assert stored and not stored_again
    assert again == first and again.summary == {"rows": 10, "by": "a"}
    _store(store, DAY + timedelta(days=2))
    _store(store, DAY + timedelta(days=1))
    with store.unit_of_work() as uow:  # another length is another window
        uow.windows.store("flights", DAY, DAY + timedelta(hours=1), 3600, 1, "warn", "x", {})
    with store.read() as uow:
        days = uow.windows.list("flights", seconds=SECONDS)
        since = uow.windows.list("flights", since=DAY + timedelta(days=1), seconds=SECONDS)
        last_two = uow.windows.list("flights", limit=2, seconds=SECONDS)
        latest = uow.windows.latest("flights", SECONDS)
        hourly = uow.windows.latest("flights", 3600)
        none = uow.windows.latest("weather")
    assert [w.window_start for w in days] == [DAY + timedelta(days=i) for i in range(3)]
    assert [w.window_start for w in since] == [DAY + timedelta(days=i) for i in (1, 2)]
    assert [w.window_start for w in last_two] == [DAY + timedelta(days=i) for i in (1, 2)]
    assert latest is not None and latest.window_start == DAY + timedelta(days=2)
    assert latest.window_start.utcoffset() == timedelta(0)
    assert hourly is not None and (hourly.state, hourly.worst) == ("warn", "x")
    assert none is None


def test_a_recomputed_window_is_updated_in_place(store: MetadataStore) -> None:
    first, _ = _store(store, DAY, rows=10)
    with store.unit_of_work() as uow:
        updated = uow.windows.update(
            first.id, 10, "alert", "performance:mae:JFK", {"mae": math.nan, "inf": [math.inf]}
        )
    assert updated.id == first.id and updated.state == "alert"
    assert updated.summary == {"mae": None, "inf": [None]}  # JSON has no NaN (PostgreSQL)
    assert updated.computed_at >= first.computed_at
    with store.read() as uow:
        assert len(uow.windows.list("flights")) == 1
    with pytest.raises(NotFoundError, match="no monitor window 999"), store.unit_of_work() as uow:
        uow.windows.update(999, 1, "ok", None, {})
    with pytest.raises(ValueError, match="invalid state"), store.unit_of_work() as uow:
        uow.windows.store("flights", DAY, DAY + timedelta(days=1), SECONDS, 1, "bad", None, {})  # type: ignore[arg-type]


def store_worker(url: str, name: str, barrier: Any, results: Any) -> None:
    store = MetadataStore(url)
    try:
        barrier.wait(TIMEOUT)
        with store.unit_of_work() as uow:
            record, stored = uow.windows.store(
                "flights", DAY, DAY + timedelta(days=1), SECONDS, 5, "ok", None, {"by": name}
            )
        results.put((name, stored, record.id, record.summary["by"]))
    finally:
        store.dispose()


def test_monitors_racing_for_one_window_store_one_row(store: MetadataStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    workers = [
        ctx.Process(target=store_worker, args=(store.url, f"m{i}", barrier, results))
        for i in range(RACERS)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
    for w in workers:
        if w.is_alive():
            w.kill()
    assert [w.exitcode for w in workers] == [0] * RACERS
    outcomes = [results.get(timeout=TIMEOUT) for _ in range(RACERS)]
    winners = [o for o in outcomes if o[1]]
    assert len(winners) == 1
    assert {o[2] for o in outcomes} == {winners[0][2]}  # the losers got the stored row
    assert {o[3] for o in outcomes} == {winners[0][0]}
    with store.read() as uow:
        assert len(uow.windows.list("flights")) == 1
