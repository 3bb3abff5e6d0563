"""Real races between OS processes, on every backend: locks and version numbers."""

from __future__ import annotations

import multiprocessing
import os
import socket
from datetime import timedelta
from typing import Any

from kiln.errors import ConcurrentRunError
from kiln.stores import MetadataStore

ROUNDS = 5
REGISTRATIONS = 8
TIMEOUT = 60


def lock_worker(url: str, name: str, barrier: Any, results: Any) -> None:
    """Race for one lock per round; stay alive until the round is over (a dead pid loses it)."""
    store = MetadataStore(url)
    try:
        for round_ in range(ROUNDS):
            barrier.wait(TIMEOUT)
            try:
                with store.unit_of_work() as uow:
                    taken = uow.locks.acquire(
                        f"pipeline-{round_}",
                        f"{name}-{round_}",
                        socket.gethostname(),
                        os.getpid(),
                        timedelta(hours=1),
                    )
                results.put((round_, name, "won", taken))
            except ConcurrentRunError:
                results.put((round_, name, "refused", None))
            barrier.wait(TIMEOUT)
    finally:
        store.dispose()


def register_worker(url: str, run_ids: list[str], barrier: Any, results: Any) -> None:
    store = MetadataStore(url)
    try:
        barrier.wait(TIMEOUT)
        for run_id in run_ids:
            with store.unit_of_work() as uow:
                version = uow.versions.register("flights", run_id, "m" * 64, {}, {})
            results.put((run_id, version.version))
    finally:
        store.dispose()


def run_workers(target: Any, args_per_worker: list[tuple[Any, ...]], barrier: Any) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=target, args=args) for args in args_per_worker]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIMEOUT)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
    assert [w.exitcode for w in workers] == [0] * len(workers)


def test_two_processes_racing_for_a_lock_one_wins(store: MetadataStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    run_workers(
        lock_worker, [(store.url, "a", barrier, results), (store.url, "b", barrier, results)],
        barrier,
    )  # fmt: skip
    outcomes = [results.get(timeout=TIMEOUT) for _ in range(2 * ROUNDS)]
    for round_ in range(ROUNDS):
        this_round = [o for o in outcomes if o[0] == round_]
        assert sorted(o[2] for o in this_round) == ["refused", "won"], this_round
        winner = next(o[1] for o in this_round if o[2] == "won")
        assert all(o[3] is None for o in this_round)
        with store.unit_of_work() as uow:
            lock = uow.locks.get(f"pipeline-{round_}")
        assert lock is not None and lock.run_id == f"{winner}-{round_}"


def test_two_processes_registering_get_distinct_consecutive_versions(
    store: MetadataStore,
) -> None:
    with store.unit_of_work() as uow:
        uow.pipelines.upsert("flights", "data-team", "delays", "kiln.yaml")
        run_ids = [
            uow.runs.create("flights", "manual", "", "c" * 64, "kiln.yaml", "h", 1).id
            for _ in range(2 * REGISTRATIONS)
        ]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    halves = [run_ids[:REGISTRATIONS], run_ids[REGISTRATIONS:]]
    run_workers(register_worker, [(store.url, ids, barrier, results) for ids in halves], barrier)
    got = dict(results.get(timeout=TIMEOUT) for _ in run_ids)
    assert sorted(got.values()) == list(range(1, 2 * REGISTRATIONS + 1))
    with store.unit_of_work() as uow:
        stored = {v.run_id: v.version for v in uow.versions.list("flights")}
    assert stored == got
