"""The metadata store contract, run on every backend (SQLite file, PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import exc as sa_exc

from kiln.errors import ConcurrentRunError, NotFoundError, StoreError
from kiln.stores import MetadataStore, RunRecord, UnitOfWork

HOST = "host-a"


def make_run(uow: UnitOfWork, pipeline: str = "flights") -> RunRecord:
    uow.pipelines.upsert(pipeline, "data-team", "delays", f"{pipeline}/kiln.yaml")
    return uow.runs.create(
        pipeline, "manual", "name: x\n", "c" * 64, f"{pipeline}/kiln.yaml", HOST, os.getpid()
    )


def task_fields(status: str = "succeeded", **overrides: object) -> dict[str, object]:
    start = datetime.now(UTC)
    fields: dict[str, object] = {
        "status": status,
        "started_at": start,
        "finished_at": start + timedelta(seconds=2),
        "wall_seconds": 2.0,
        "cpu_seconds": 1.5,
        "peak_memory_bytes": 5_000_000_000,
        "rows_train": 800,
        "rows_holdout": 200,
        "metrics": {"mae": 3.5},
        "artifact_digest": "a" * 64 if status == "succeeded" else None,
        "error": None if status == "succeeded" else "ValueError: boom",
        "log": "trained\n",
    }
    fields.update(overrides)
    return fields


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def is_utc(moment: datetime | None) -> bool:
    return moment is not None and moment.utcoffset() == timedelta(0)


class TestMetadataContract:
    # -- schema -------------------------------------------------------------------------------

    def test_check_schema_before_and_after_upgrade(self, db_url: str) -> None:
        metadata = MetadataStore(db_url, create=True)
        try:
            with pytest.raises(StoreError, match="not at the current schema") as info:
                metadata.check_schema()
            assert "kiln db upgrade" in str(info.value)
            assert metadata.schema_revision() is None
            metadata.upgrade()
            metadata.check_schema()
            metadata.upgrade()  # idempotent
            metadata.check_schema()
            assert metadata.schema_revision() == "0007"
        finally:
            metadata.dispose()

    def test_check_schema_refuses_a_schema_from_a_newer_kiln(self, store: MetadataStore) -> None:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
        with pytest.raises(StoreError, match="at schema 9999, which this version of Kiln"):
            store.check_schema()

    # -- pipelines ----------------------------------------------------------------------------

    def test_pipelines_upsert_get_list(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            created = uow.pipelines.upsert("flights", "alice", "delays", "a/kiln.yaml")
            uow.pipelines.upsert("airports", "bob", "traffic", "b/kiln.yaml")
        assert created.owner == "alice"
        assert is_utc(created.created_at)
        assert created.created_at == created.updated_at
        with store.unit_of_work() as uow:
            updated = uow.pipelines.upsert("flights", "carol", "delays v2", "c/kiln.yaml")
        assert (updated.owner, updated.description, updated.config_path) == (
            "carol",
            "delays v2",
            "c/kiln.yaml",
        )
        assert updated.created_at == created.created_at
        assert updated.updated_at > created.updated_at
        with store.unit_of_work() as uow:
            assert uow.pipelines.get("flights") == updated
            assert [p.name for p in uow.pipelines.list()] == ["airports", "flights"]
            with pytest.raises(NotFoundError, match="no pipeline 'nope'"):
                uow.pipelines.get("nope")

    # -- runs ---------------------------------------------------------------------------------

    def test_run_create_and_get(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            run = make_run(uow)
        assert len(run.id) == 12
        int(run.id, 16)
        assert (run.status, run.trigger, run.attempt) == ("running", "manual", 1)
        assert (run.host, run.pid) == (HOST, os.getpid())
        assert run.finished_at is None and run.model_version is None and run.rows is None
        assert is_utc(run.started_at)
        with store.unit_of_work() as uow:
            assert uow.runs.get(run.id) == run
            with pytest.raises(NotFoundError, match="no run 'missing'") as info:
                uow.runs.get("missing")
            assert "kiln runs list" in str(info.value)
            with pytest.raises(NotFoundError, match="no pipeline 'ghost'"):
                uow.runs.create("ghost", "manual", "", "c" * 64, "k.yaml", HOST, 1)
            with pytest.raises(ValueError, match="invalid trigger"):
                uow.runs.create("flights", "cron", "", "c" * 64, "k.yaml", HOST, 1)

    def test_run_list_newest_first_and_latest(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            assert uow.runs.latest("flights") is None
            first = make_run(uow)
            second = make_run(uow)
            other = make_run(uow, "airports")
        with store.unit_of_work() as uow:
            assert [r.id for r in uow.runs.list()] == [other.id, second.id, first.id]
            assert [r.id for r in uow.runs.list("flights")] == [second.id, first.id]
            assert [r.id for r in uow.runs.list(limit=1)] == [other.id]
            latest = uow.runs.latest("flights")
            assert latest is not None and latest.id == second.id

    def test_run_update_and_mark_finished(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            run = make_run(uow)
        with store.unit_of_work() as uow:
            updated = uow.runs.update(
                run.id,
                data_digest="d" * 64,
                rows={"JFK": 1000, "LGA": 900},
                attempt=2,
                trigger="resume",
            )
            with pytest.raises(ValueError, match="cannot update run field"):
                uow.runs.update(run.id, id="other")
            with pytest.raises(ValueError, match="invalid status"):
                uow.runs.update(run.id, status="done")
            with pytest.raises(NotFoundError):
                uow.runs.update("missing", attempt=3)
        assert updated.rows == {"JFK": 1000, "LGA": 900}
        assert (updated.attempt, updated.trigger) == (2, "resume")
        with store.unit_of_work() as uow:
            failed = uow.runs.mark_finished(run.id, "failed", error="TrainingError: all failed")
        assert failed.status == "failed" and failed.error == "TrainingError: all failed"
        assert is_utc(failed.finished_at)
        with store.unit_of_work() as uow:
            done = uow.runs.mark_finished(run.id, "succeeded", model_version=3)
            assert uow.runs.get(run.id) == done
        assert (done.status, done.error, done.model_version) == ("succeeded", None, 3)

    # -- unit of work -------------------------------------------------------------------------

    def test_rollback_on_exception_writes_nothing(self, store: MetadataStore) -> None:
        with pytest.raises(RuntimeError, match="crash"), store.unit_of_work() as uow:
            run = make_run(uow)
            uow.steps.start(run.id, "extract")
            uow.audit.record("alice", "promote", "flights")
            raise RuntimeError("crash")
        with store.unit_of_work() as uow:
            assert uow.pipelines.list() == []
            assert uow.runs.list() == []
            assert uow.steps.for_run(run.id) == []
            assert uow.audit.list() == []

    def test_repositories_share_one_transaction(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            run = make_run(uow)
            uow.steps.start(run.id, "extract")
            assert uow.runs.get(run.id).id == run.id
            assert [s.name for s in uow.steps.for_run(run.id)] == ["extract"]

    # -- steps --------------------------------------------------------------------------------

    def test_steps_start_finish_restart(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            run = make_run(uow)
            extract = uow.steps.start(run.id, "extract")
            uow.steps.start(run.id, "check")
        assert (extract.status, extract.finished_at, extract.details) == ("running", None, {})
        with store.unit_of_work() as uow:
            finished = uow.steps.finish(
                run.id,
                "extract",
                "succeeded",
                wall_seconds=1.25,
                cpu_seconds=0.5,
                peak_memory_bytes=123_456_789,
                details={"rows": 1000},
            )
            failed = uow.steps.finish(
                run.id,
                "check",
                "failed",
                wall_seconds=0.1,
                cpu_seconds=0.1,
                peak_memory_bytes=1,
                error="DataCheckError",
            )
            with pytest.raises(NotFoundError, match="never started"):
                uow.steps.finish(
                    run.id, "train", "succeeded", wall_seconds=0, cpu_seconds=0,
                    peak_memory_bytes=0,
                )  # fmt: skip
            with pytest.raises(ValueError, match="invalid status"):
                uow.steps.finish(
                    run.id, "check", "ok", wall_seconds=0, cpu_seconds=0, peak_memory_bytes=0
                )
        assert finished.status == "succeeded" and finished.details == {"rows": 1000}
        assert (finished.wall_seconds, finished.cpu_seconds) == (1.25, 0.5)
        assert finished.peak_memory_bytes == 123_456_789 and is_utc(finished.finished_at)
        assert failed.error == "DataCheckError"
        with store.unit_of_work() as uow:
            assert [s.name for s in uow.steps.for_run(run.id)] == ["extract", "check"]
            restarted = uow.steps.start(run.id, "check")  # resume
        assert restarted.id == failed.id
        assert (restarted.status, restarted.finished_at, restarted.error) == (
            "running",
            None,
            None,
        )
        assert restarted.wall_seconds is None and restarted.started_at > failed.started_at
        with store.unit_of_work() as uow:
            steps = uow.steps.for_run(run.id)
        assert [(s.name, s.status) for s in steps] == [
            ("extract", "succeeded"),
            ("check", "running"),
        ]

    # -- tasks --------------------------------------------------------------------------------

    def test_tasks_record_retry_and_succeeded(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            run = make_run(uow)
        with store.unit_of_work() as uow:
            jfk = uow.tasks.record(run.id, "JFK", **task_fields())  # type: ignore[arg-type]
        with store.unit_of_work() as uow:
            lga = uow.tasks.record(run.id, "LGA", **task_fields("failed"))  # type: ignore[arg-type]
        assert (jfk.attempt, jfk.status, jfk.metrics) == (1, "succeeded", {"mae": 3.5})
        assert jfk.peak_memory_bytes == 5_000_000_000 and is_utc(jfk.started_at)
        assert (lga.status, lga.error, lga.artifact_digest) == ("failed", "ValueError: boom", None)
        with store.unit_of_work() as uow:
            assert set(uow.tasks.succeeded(run.id)) == {"JFK"}
            retried = uow.tasks.record(
                run.id,
                "LGA",
                **task_fields(metrics={"mae": 4.0}, log="retry\n"),  # type: ignore[arg-type]
            )
        assert retried.id == lga.id
        assert (retried.attempt, retried.status, retried.error) == (2, "succeeded", None)
        assert (retried.metrics, retried.log) == ({"mae": 4.0}, "retry\n")
        with store.unit_of_work() as uow:
            tasks = uow.tasks.for_run(run.id)
            succeeded = uow.tasks.succeeded(run.id)
        assert [(t.segment, t.attempt) for t in tasks] == [("JFK", 1), ("LGA", 2)]
        assert succeeded == {"JFK": jfk, "LGA": retried}
        with store.unit_of_work() as uow:
            with pytest.raises(ValueError, match="invalid status"):
                uow.tasks.record(run.id, "EWR", **task_fields("running"))  # type: ignore[arg-type]
            naive = task_fields(started_at=datetime(2026, 1, 1))
            with pytest.raises(ValueError, match="started_at must be a timezone-aware"):
                uow.tasks.record(run.id, "EWR", **naive)  # type: ignore[arg-type]

    def test_task_writes_are_cheap(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            run = make_run(uow)
        fields = task_fields()
        started = time.perf_counter()
        for i in range(100):
            with store.unit_of_work() as uow:
                uow.tasks.record(run.id, f"segment-{i:03d}", **fields)  # type: ignore[arg-type]
        per_write = (time.perf_counter() - started) / 100
        with store.unit_of_work() as uow:
            assert len(uow.tasks.succeeded(run.id)) == 100
        # Target is < 5 ms; the bound leaves room for a loaded CI machine.
        assert per_write < 0.025, f"{per_write * 1000:.1f} ms per task write"

    # -- model versions -----------------------------------------------------------------------

    def test_versions_are_numbered_per_pipeline(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            runs = [make_run(uow) for _ in range(3)]
            other = make_run(uow, "airports")
        registered = []
        for run in runs:
            with store.unit_of_work() as uow:
                registered.append(
                    uow.versions.register(
                        "flights", run.id, "m" * 64, {"mae": 3.0}, {"config_digest": "c" * 64}
                    )
                )
        with store.unit_of_work() as uow:
            first_other = uow.versions.register("airports", other.id, "n" * 64, {}, {})
        assert [v.version for v in registered] == [1, 2, 3]
        assert first_other.version == 1
        v1 = registered[0]
        assert (v1.stage, v1.run_id, v1.metrics, v1.lineage) == (
            "candidate",
            runs[0].id,
            {"mae": 3.0},
            {"config_digest": "c" * 64},
        )
        assert is_utc(v1.created_at) and v1.created_at == v1.stage_changed_at
        with store.unit_of_work() as uow:
            with pytest.raises(StoreError, match="already registered as version 1"):
                uow.versions.register("flights", runs[0].id, "m" * 64, {}, {})
            with pytest.raises(NotFoundError, match="no run 'missing'"):
                uow.versions.register("flights", "missing", "m" * 64, {}, {})
            with pytest.raises(NotFoundError, match="no pipeline 'ghost'"):
                uow.versions.register("ghost", runs[0].id, "m" * 64, {}, {})
            with pytest.raises(ValueError, match="invalid stage"):
                uow.versions.register("flights", runs[0].id, "m" * 64, {}, {}, stage="live")

    def test_versions_get_list_stage_for_run(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            runs = [make_run(uow) for _ in range(3)]
            other = make_run(uow, "airports")
            for run in runs:
                uow.versions.register("flights", run.id, "m" * 64, {}, {})
            uow.versions.register("airports", other.id, "n" * 64, {}, {}, stage="shadow")
            unregistered = make_run(uow)
        with store.unit_of_work() as uow:
            v2 = uow.versions.get("flights", 2)
            assert v2.run_id == runs[1].id
            with pytest.raises(NotFoundError, match="no version 9 of pipeline 'flights'") as info:
                uow.versions.get("flights", 9)
            assert "kiln models list" in str(info.value)
            assert [(v.pipeline, v.version) for v in uow.versions.list()] == [
                ("airports", 1),
                ("flights", 1),
                ("flights", 2),
                ("flights", 3),
            ]
            assert [v.version for v in uow.versions.list("flights")] == [1, 2, 3]
            promoted = uow.versions.set_stage("flights", 2, "production")
            uow.versions.set_stage("flights", 3, "blocked")
            with pytest.raises(NotFoundError):
                uow.versions.set_stage("flights", 9, "archived")
            with pytest.raises(ValueError, match="invalid stage"):
                uow.versions.set_stage("flights", 1, "live")
        assert promoted.stage == "production" and promoted.stage_changed_at > v2.created_at
        with store.unit_of_work() as uow:
            assert [v.version for v in uow.versions.by_stage("flights", "production")] == [2]
            assert [v.version for v in uow.versions.by_stage("flights", "candidate")] == [1]
            assert [v.version for v in uow.versions.by_stage("flights", "blocked")] == [3]
            assert uow.versions.by_stage("flights", "shadow") == []
            assert uow.versions.for_run(runs[1].id) == promoted
            assert uow.versions.for_run(unregistered.id) is None

    # -- audit --------------------------------------------------------------------------------

    def test_audit_record_and_list(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            first = uow.audit.record("alice", "promote", "flights", 2, "gates passed")
            uow.audit.record("bob", "override", "flights", 3, "false alarm", {"gate": "replay"})
            uow.audit.record("carol", "deploy", "airports")
        assert (first.actor, first.action, first.version, first.reason) == (
            "alice",
            "promote",
            2,
            "gates passed",
        )
        assert first.details == {} and is_utc(first.at)
        with store.unit_of_work() as uow:
            assert [e.actor for e in uow.audit.list()] == ["carol", "bob", "alice"]
            flights = uow.audit.list("flights")
            assert [e.actor for e in uow.audit.list(limit=1)] == ["carol"]
        assert [e.actor for e in flights] == ["bob", "alice"]
        assert flights[0].details == {"gate": "replay"}

    # -- deployments --------------------------------------------------------------------------

    def test_deployments_record_and_list(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            first = uow.deployments.record("flights", 1, "promote", actor="alice")
            uow.deployments.record("flights", 2, "shadow", actor="bob", reason="try it")
            uow.deployments.record("flights", 2, "promote", actor="bob", from_version=1)
            uow.deployments.record("airports", 1, "promote", actor="carol")
        assert (first.pipeline, first.version, first.action, first.from_version) == (
            "flights",
            1,
            "promote",
            None,
        )
        assert first.actor == "alice" and first.reason is None and is_utc(first.at)
        with store.unit_of_work() as uow:
            flights = uow.deployments.list("flights")
            assert [d.action for d in uow.deployments.list("flights", limit=1)] == ["promote"]
            assert len(uow.deployments.list("flights", limit=None)) == 3
            assert uow.deployments.list("trains") == []
        assert [(d.action, d.version, d.from_version) for d in flights] == [
            ("promote", 2, 1),
            ("shadow", 2, None),
            ("promote", 1, None),
        ]
        assert flights[1].reason == "try it"

    def test_deployment_action_is_checked(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow, pytest.raises(ValueError, match="invalid action"):
            uow.deployments.record("flights", 1, "deploy", actor="alice")  # type: ignore[arg-type]
        insert = (
            "INSERT INTO deployments (pipeline, version, action, actor, at)"
            " VALUES ('flights', 1, 'deploy', 'alice', CURRENT_TIMESTAMP)"
        )
        with (
            pytest.raises(sa_exc.IntegrityError, match="ck_deployments_action"),
            store.engine.begin() as conn,
        ):
            conn.exec_driver_sql(insert)

    def test_pipeline_lock_for_stage_changes(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            make_run(uow)
        with store.unit_of_work() as uow:
            assert uow.pipelines.lock("flights").name == "flights"
            with pytest.raises(NotFoundError, match="no pipeline 'trains'"):
                uow.pipelines.lock("trains")

    # -- pipeline locks -----------------------------------------------------------------------

    def test_lock_acquire_refuse_release(self, store: MetadataStore) -> None:
        hour = timedelta(hours=1)
        with store.unit_of_work() as uow:
            assert uow.locks.acquire("flights", "run-a", HOST, os.getpid(), hour) is None
            assert uow.locks.acquire("flights", "run-a", HOST, os.getpid(), hour) is None
        with store.unit_of_work() as uow:
            with pytest.raises(ConcurrentRunError) as info:
                uow.locks.acquire("flights", "run-b", "host-b", 4242, hour)
            lock = uow.locks.get("flights")
        message = str(info.value)
        for part in ("'flights'", "'run-a'", HOST, str(os.getpid()), "since", "kiln run --resume"):
            assert part in message
        assert lock is not None and (lock.run_id, lock.host) == ("run-a", HOST)
        assert is_utc(lock.acquired_at)
        with store.unit_of_work() as uow:
            assert uow.locks.release("flights", "run-b") is False
            assert uow.locks.get("flights") is not None
            assert uow.locks.release("flights", "run-a") is True
            assert uow.locks.get("flights") is None
            assert uow.locks.acquire("flights", "run-b", "host-b", 4242, hour) is None

    def test_refused_lock_does_not_poison_the_unit_of_work(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            uow.locks.acquire("flights", "run-a", HOST, os.getpid(), timedelta(hours=1))
        with store.unit_of_work() as uow:
            with pytest.raises(ConcurrentRunError):
                uow.locks.acquire("flights", "run-b", HOST, os.getpid(), timedelta(hours=1))
            uow.audit.record("bob", "run-refused", "flights")
        with store.unit_of_work() as uow:
            assert [e.action for e in uow.audit.list()] == ["run-refused"]

    def test_lock_heartbeat(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            uow.locks.acquire("flights", "run-a", HOST, os.getpid(), timedelta(hours=1))
            before = uow.locks.get("flights")
        time.sleep(0.01)
        with store.unit_of_work() as uow:
            uow.locks.heartbeat("flights", "run-a")
            after = uow.locks.get("flights")
            with pytest.raises(ConcurrentRunError, match="no longer holds the lock"):
                uow.locks.heartbeat("flights", "run-b")
        assert before is not None and after is not None
        assert after.heartbeat_at > before.heartbeat_at
        assert after.acquired_at == before.acquired_at

    def test_lock_taken_over_when_stale(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            uow.locks.acquire("flights", "run-a", "host-b", 4242, timedelta(hours=1))
        time.sleep(0.05)
        with store.unit_of_work() as uow:
            with pytest.raises(ConcurrentRunError):
                uow.locks.acquire("flights", "run-b", HOST, os.getpid(), timedelta(hours=1))
            previous = uow.locks.acquire(
                "flights", "run-b", HOST, os.getpid(), timedelta(milliseconds=10)
            )
        assert previous == "run-a"
        with store.unit_of_work() as uow:
            lock = uow.locks.get("flights")
            with pytest.raises(ConcurrentRunError, match="no longer holds"):
                uow.locks.heartbeat("flights", "run-a")
        assert lock is not None and (lock.run_id, lock.host, lock.pid) == (
            "run-b",
            HOST,
            os.getpid(),
        )

    def test_lock_taken_over_when_holder_died(self, store: MetadataStore) -> None:
        gone = dead_pid()
        with store.unit_of_work() as uow:
            uow.locks.acquire("flights", "run-a", HOST, gone, timedelta(hours=1))
            # A dead pid on another host says nothing: that host's pids are not ours to check.
            uow.locks.acquire("airports", "run-c", "host-b", gone, timedelta(hours=1))
        with store.unit_of_work() as uow:
            previous = uow.locks.acquire("flights", "run-b", HOST, os.getpid(), timedelta(hours=1))
            with pytest.raises(ConcurrentRunError):
                uow.locks.acquire("airports", "run-d", HOST, os.getpid(), timedelta(hours=1))
        assert previous == "run-a"
        with store.unit_of_work() as uow:
            lock = uow.locks.get("flights")
        assert lock is not None and lock.run_id == "run-b"

    def test_lock_resumed_run_takes_over_its_own_dead_lock(self, store: MetadataStore) -> None:
        with store.unit_of_work() as uow:
            uow.locks.acquire("flights", "run-a", HOST, dead_pid(), timedelta(hours=1))
        with store.unit_of_work() as uow:
            assert (
                uow.locks.acquire("flights", "run-a", HOST, os.getpid(), timedelta(hours=1)) is None
            )
            lock = uow.locks.get("flights")
        assert lock is not None and lock.pid == os.getpid()
