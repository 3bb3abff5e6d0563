"""A run recorded ``running`` is judged alive by its pipeline lock's heartbeat when read: a
silent heartbeat, a lost lock or a gone process make it ``interrupted`` in listings; the
candidates that such a run registered without releasing are the ones status flags and watch
gates."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta

from kiln.registry.liveness import STALE_AFTER, dead_reason, shown_status, ungated_versions
from kiln.registry.status import pipeline_status
from kiln.stores import MetadataStore
from kiln.stores.metadata.records import LockRecord, RunRecord

PIPELINE = "flights-delay"
HOST = os.uname().nodename


def _run(store: MetadataStore, host: str, pid: int) -> tuple[RunRecord, LockRecord]:
    with store.unit_of_work() as uow:
        uow.pipelines.upsert(PIPELINE, "data-team", "arrival delays", "kiln.yaml")
        run = uow.runs.create(PIPELINE, "manual", "", "c" * 64, "kiln.yaml", host, pid)
        uow.locks.acquire(PIPELINE, run.id, host, pid, STALE_AFTER)
        lock = uow.locks.get(PIPELINE)
    assert lock is not None
    return run, lock


def _gone_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_silent_heartbeat_makes_a_running_run_interrupted(store: MetadataStore) -> None:
    run, lock = _run(store, "another-host", 4242)  # not checkable from here: heartbeat only
    fresh = lock.heartbeat_at + STALE_AFTER - timedelta(seconds=1)
    assert dead_reason(run, lock, now=fresh) is None
    assert shown_status(run, lock, now=fresh) == "running"
    silent = lock.heartbeat_at + timedelta(minutes=3, seconds=5)
    assert dead_reason(run, lock, now=silent) == (
        "no heartbeat for 3m: its process is dead or cut off"
    )
    assert shown_status(run, lock, now=silent) == "interrupted"
    [row] = pipeline_status(store, now=silent)
    assert row["last_run"].startswith("interrupted ")


def test_a_gone_process_or_a_lost_lock_is_dead_at_once(store: MetadataStore) -> None:
    pid = _gone_pid()
    run, lock = _run(store, HOST, pid)
    assert dead_reason(run, lock, now=lock.heartbeat_at) == (
        f"its process (pid {pid} on {HOST}) is gone"
    )
    mine, _ = _run(store, HOST, os.getpid())  # takes the dead run's lock over
    with store.unit_of_work() as uow:
        taken = uow.locks.get(PIPELINE)
    assert dead_reason(run, taken) is not None and "lock" in str(dead_reason(run, taken))
    assert dead_reason(mine, taken) is None
    with store.unit_of_work() as uow:
        uow.runs.mark_finished(run.id, "failed", error="boom")
        finished = uow.runs.get(run.id)
    assert shown_status(finished, None) == "failed"  # only `running` is judged


def test_ungated_candidates_are_those_of_dead_runs_that_did_not_skip_release(
    store: MetadataStore,
) -> None:
    run, lock = _run(store, "another-host", 4242)
    with store.unit_of_work() as uow:
        v = uow.versions.register(PIPELINE, run.id, "0" * 64, {}, {}).version
    alive = lock.heartbeat_at + timedelta(seconds=30)
    dead = lock.heartbeat_at + STALE_AFTER + timedelta(seconds=30)
    with store.unit_of_work() as uow:
        assert ungated_versions(uow, PIPELINE, now=alive) == []  # its run is releasing it
        [found] = ungated_versions(uow, PIPELINE, now=dead)
    assert (found.version, found.run_id) == (v, run.id)
    assert found.advice() == (
        f"v{v} candidate, never gated: run `kiln run --resume {run.id}`"
        f" or `kiln gates check {PIPELINE} {v}`"
    )
    [row] = pipeline_status(store, now=dead)
    assert row["never_gated"] == [found.advice()]

    with store.unit_of_work() as uow:  # --skip-gates: the run skipped its release on purpose
        uow.steps.start(run.id, "release")
        uow.steps.finish(
            run.id, "release", "skipped", wall_seconds=0, cpu_seconds=0, peak_memory_bytes=0
        )
        assert ungated_versions(uow, PIPELINE, now=dead) == []
        uow.steps.start(run.id, "release")  # restarted by a resume, not finished
        assert [u.version for u in ungated_versions(uow, PIPELINE, now=dead)] == [v]
        uow.gates.record(PIPELINE, v, "data_quality", "passed", "ok", {}, trigger="run")
        [found] = ungated_versions(uow, PIPELINE, now=dead)  # killed before acting on them
        assert found.gated and "gated but never released" in found.advice()
        uow.steps.finish(
            run.id, "release", "succeeded", wall_seconds=1, cpu_seconds=1, peak_memory_bytes=1
        )
        assert ungated_versions(uow, PIPELINE, now=dead) == []  # released: nothing to flag


def test_a_candidate_that_an_older_kiln_marked_succeeded_is_flagged_not_released(
    store: MetadataStore,
) -> None:
    """A Kiln without a release step marked the run succeeded at register; a `--skip-gates`
    run of it looks the same, so a watcher must not gate and promote it: status flags it."""
    run, _ = _run(store, HOST, os.getpid())
    with store.unit_of_work() as uow:
        v = uow.versions.register(PIPELINE, run.id, "0" * 64, {}, {}).version
        uow.runs.mark_finished(run.id, "succeeded", model_version=v)
        uow.locks.release(PIPELINE, run.id)
        assert ungated_versions(uow, PIPELINE) == []  # what `kiln watch` releases
        [found] = ungated_versions(uow, PIPELINE, legacy=True)
    assert (found.version, found.step_recorded) == (v, False)
    [row] = pipeline_status(store)
    assert row["never_gated"] == [found.advice()]


def test_a_release_that_failed_after_its_gates_stored_results_is_tried_again(
    store: MetadataStore,
) -> None:
    """The gates stored their results, then the stage change failed (a locked database, a
    SIGTERM): the version is still a candidate, pending release and flagged."""
    run, lock = _run(store, "another-host", 4242)
    dead = lock.heartbeat_at + STALE_AFTER + timedelta(seconds=30)
    with store.unit_of_work() as uow:
        v = uow.versions.register(PIPELINE, run.id, "0" * 64, {}, {}).version
        uow.steps.start(run.id, "release")
        uow.gates.record(PIPELINE, v, "data_quality", "passed", "ok", {}, trigger="run")
        uow.steps.finish(
            run.id, "release", "failed", wall_seconds=1, cpu_seconds=1, peak_memory_bytes=1
        )
        [found] = ungated_versions(uow, PIPELINE, now=dead)
    assert found.version == v and found.gated
    assert "gated but never released" in found.advice()
