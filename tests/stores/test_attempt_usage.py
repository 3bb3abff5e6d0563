"""What cost reads from the metadata store, on every backend: a replaced attempt of a task or
step keeps its usage in ``earlier_attempts``, a task keeps its worker's base memory, a gate
result keeps its own compute."""

from __future__ import annotations

from datetime import datetime

from test_metadata_contract import make_run, task_fields

from kiln.stores import MetadataStore

MiB = 2**20


def test_a_retried_task_keeps_its_failed_attempts_usage(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        run = make_run(uow)
        first = uow.tasks.record(
            run.id, "JFK",
            **task_fields("failed", wall_seconds=7.0, cpu_seconds=6.5, base_memory_bytes=90 * MiB),  # type: ignore[arg-type]
        )  # fmt: skip
    assert first.earlier_attempts is None and first.base_memory_bytes == 90 * MiB
    assert first.own_memory_bytes == 5_000_000_000 - 90 * MiB
    with store.unit_of_work() as uow:
        uow.tasks.record(run.id, "JFK", **task_fields("failed", wall_seconds=3.0))  # type: ignore[arg-type]
        third = uow.tasks.record(
            run.id,
            "JFK",
            **task_fields(wall_seconds=2.0, base_memory_bytes=80 * MiB),  # type: ignore[arg-type]
        )
    assert third.attempt == 3 and third.status == "succeeded" and third.wall_seconds == 2.0
    assert third.earlier_attempts is not None
    assert [(a["status"], a["wall_seconds"]) for a in third.earlier_attempts] == [
        ("failed", 7.0),
        ("failed", 3.0),
    ]
    kept = third.earlier_attempts[0]
    assert kept["cpu_seconds"] == 6.5 and kept["base_memory_bytes"] == 90 * MiB
    assert kept["peak_memory_bytes"] == 5_000_000_000
    assert datetime.fromisoformat(kept["started_at"]) <= datetime.fromisoformat(kept["finished_at"])
    assert third.earlier_attempts[1]["base_memory_bytes"] is None  # not measured: None, not 0
    with store.read() as uow:
        [again] = uow.tasks.for_run(run.id)
    assert again.earlier_attempts == third.earlier_attempts


def test_a_restarted_step_keeps_its_earlier_attempts_usage(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        run = make_run(uow)
        uow.steps.start(run.id, "train")
        uow.steps.finish(
            run.id, "train", "failed", wall_seconds=12.0, cpu_seconds=20.0,
            peak_memory_bytes=300 * MiB, error="2 segments failed",
        )  # fmt: skip
        uow.steps.start(run.id, "package")  # killed: never finished
    with store.unit_of_work() as uow:  # resume
        train = uow.steps.start(run.id, "train")
        package = uow.steps.start(run.id, "package")
        fresh = uow.steps.start(run.id, "release")
    assert train.status == "running" and train.wall_seconds is None
    assert train.earlier_attempts is not None
    [kept] = train.earlier_attempts
    assert (kept["status"], kept["wall_seconds"], kept["cpu_seconds"]) == ("failed", 12.0, 20.0)
    assert kept["peak_memory_bytes"] == 300 * MiB and "base_memory_bytes" not in kept
    assert package.earlier_attempts is not None
    assert package.earlier_attempts[0]["status"] == "running"
    assert package.earlier_attempts[0]["wall_seconds"] is None  # unknown, not 0
    assert fresh.earlier_attempts is None


def test_gate_results_keep_their_own_compute(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        unmeasured = uow.gates.record("flights", 2, "replay", "passed", "ok", {})
        uow.gates.record(
            "flights", 2, "shadow", "pending", "until 12:00", {}, trigger="watch",
            wall_seconds=0.5, cpu_seconds=0.25, peak_memory_bytes=100 * MiB,
        )  # fmt: skip
        concluded = uow.gates.record(
            "flights", 2, "shadow", "passed", "120 requests", {}, trigger="watch",
            wall_seconds=1.0, cpu_seconds=0.5, peak_memory_bytes=120 * MiB,
        )  # fmt: skip
        recheck = uow.gates.record(
            "flights", 2, "replay", "passed", "ok", {}, trigger="recheck",
            wall_seconds=3.0, cpu_seconds=2.5, peak_memory_bytes=400 * MiB,
        )  # fmt: skip
    assert unmeasured.wall_seconds is None and unmeasured.cpu_seconds is None
    # the pending evaluation it concludes was spent too
    assert (concluded.wall_seconds, concluded.cpu_seconds) == (1.5, 0.75)
    assert concluded.peak_memory_bytes == 120 * MiB
    with store.read() as uow:
        history = uow.gates.history("flights", 2)
    assert [(g.gate, g.trigger, g.cpu_seconds) for g in history] == [
        ("replay", "run", None),
        ("shadow", "watch", 0.75),
        ("replay", "recheck", 2.5),
    ]
    assert recheck.peak_memory_bytes == 400 * MiB
