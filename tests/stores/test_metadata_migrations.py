"""The Alembic migrations build exactly the schema that tables.py declares, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc

from kiln.errors import StoreError
from kiln.stores import MetadataStore
from kiln.stores.metadata.tables import ONE_PRODUCTION, Base


def test_migrations_match_the_models(store: MetadataStore) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_tables_exist_after_upgrade(store: MetadataStore) -> None:
    names = set(sa.inspect(store.engine).get_table_names())
    assert set(Base.metadata.tables) <= names
    assert "alembic_version" in names


def _production_index(store: MetadataStore) -> dict[str, Any] | None:
    for index in sa.inspect(store.engine).get_indexes("model_versions"):
        if index["name"] == ONE_PRODUCTION:
            return dict(index)
    return None


def test_one_production_is_a_partial_unique_index(store: MetadataStore) -> None:
    """Autogenerate does not compare WHERE clauses, so check the reflected one here."""
    index = _production_index(store)
    assert index is not None
    assert index["column_names"] == ["pipeline"] and index["unique"]
    dialect = store.engine.dialect.name
    where = str(index["dialect_options"][f"{dialect}_where"])
    assert where.replace("(", "").replace(")", "").replace("::text", "") in (
        "stage = 'production'",
        "stage = 'production'::character varying",
    )


def _seed(store: MetadataStore, stages: list[str]) -> None:
    with store.unit_of_work() as uow:
        uow.pipelines.upsert("flights", "data-team", "delays", "kiln.yaml")
        for stage in stages:
            run = uow.runs.create("flights", "manual", "", "c" * 64, "kiln.yaml", "h", 1)
            uow.versions.register("flights", run.id, "m" * 64, {}, {}, stage=stage)  # type: ignore[arg-type]


def test_0002_downgrades_and_upgrades_keeping_versions(store: MetadataStore) -> None:
    _seed(store, ["archived", "production", "shadow"])
    with store.unit_of_work() as uow:
        uow.deployments.record("flights", 2, "promote", actor="alice", from_version=1)
    store.downgrade("0001")
    assert store.schema_revision() == "0001"
    assert "deployments" not in sa.inspect(store.engine).get_table_names()
    assert _production_index(store) is None
    store.upgrade()
    assert store.schema_revision() == "0007"
    assert _production_index(store) is not None
    with store.unit_of_work() as uow:
        assert [v.stage for v in uow.versions.list("flights")] == [
            "archived",
            "production",
            "shadow",
        ]
        assert uow.deployments.list("flights") == []  # the history went with the downgrade


def _seed_0001(store: MetadataStore, stages: list[str]) -> None:
    """Rows as revision 0001 holds them (the ORM models describe the newest revision)."""
    stamp = "2026-01-01 00:00:00"
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO pipelines (name, owner, description, config_path, created_at,"
                " updated_at) VALUES ('flights', 'data-team', 'delays', 'kiln.yaml', :t, :t)"
            ),
            {"t": stamp},
        )
        for i, stage in enumerate(stages, start=1):
            conn.execute(
                sa.text(
                    'INSERT INTO runs (id, pipeline, status, "trigger", config_text,'
                    " config_digest, config_path, host, pid, attempt, started_at)"
                    " VALUES (:id, 'flights', 'succeeded', 'manual', '', :d, 'kiln.yaml', 'h', 1,"
                    " 1, :t)"
                ),
                {"id": f"run{i}", "d": "c" * 64, "t": stamp},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO model_versions (pipeline, version, run_id, stage,"
                    " manifest_digest, created_at, stage_changed_at, metrics, lineage)"
                    " VALUES ('flights', :v, :run, :stage, :m, :t, :t, '{}', '{}')"
                ),
                {"v": i, "run": f"run{i}", "stage": stage, "m": "m" * 64, "t": stamp},
            )


def test_0002_refuses_a_database_with_two_production_versions(store: MetadataStore) -> None:
    store.downgrade("0001")
    _seed_0001(store, ["production", "production"])
    with pytest.raises(sa_exc.IntegrityError):
        store.upgrade()
    assert store.schema_revision() == "0001"  # the whole upgrade rolled back
    assert "deployments" not in sa.inspect(store.engine).get_table_names()


def _gate_rows(store: MetadataStore) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text("SELECT version, gate, status, summary FROM gate_results ORDER BY id")
            )
        ]


def test_0004_keeps_gate_results_as_history_and_downgrades_to_the_decision(
    store: MetadataStore,
) -> None:
    store.downgrade("0003")
    with store.engine.begin() as conn:
        for version, gate, status, evidence in (
            (2, "champion_challenger", "failed", '{"champion_version": 1}'),
            (2, "data_quality", "passed", "{}"),
            (1, "champion_challenger", "skipped", "{}"),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO gate_results (pipeline, version, gate, status, summary,"
                    " evidence, evaluated_at) VALUES ('flights', :v, :g, :s, :m, :e, :t)"
                ),
                {
                    "v": version,
                    "g": gate,
                    "s": status,
                    "m": status,
                    "e": evidence,
                    "t": "2026-01-01",
                },
            )
    store.upgrade()
    assert store.schema_revision() == "0007"
    with store.unit_of_work() as uow:
        found = uow.gates.history("flights", 2)
        assert [(g.gate, g.trigger, g.champion_version) for g in found] == [
            ("champion_challenger", "run", 1),
            ("data_quality", "run", None),
        ]
        uow.gates.record(
            "flights", 2, "champion_challenger", "passed", "recheck", {},
            trigger="recheck", champion_version=1,
        )  # fmt: skip
        fire = uow.fires.claim("flights", datetime(2026, 1, 1, tzinfo=UTC), "kiln.yaml", "s")
        assert fire is not None
        uow.fires.finish(fire.id, "blocked", run_id="r1", error="v2 blocked by its gates")
    assert len(_gate_rows(store)) == 4

    store.downgrade("0003")
    assert _gate_rows(store) == [
        (2, "champion_challenger", "failed", "failed"),  # the decision, not the re-check
        (2, "data_quality", "passed", "passed"),
        (1, "champion_challenger", "skipped", "skipped"),
    ]
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM schedule_fires")).scalar() == "succeeded"
    store.upgrade()
    with store.unit_of_work() as uow:
        assert [g.status for g in uow.gates.for_version("flights", 2)] == ["failed", "passed"]


def test_0005_keeps_runs_and_their_steps_and_tasks_and_an_alert_can_start_a_run(
    store: MetadataStore,
) -> None:
    """0005 rebuilds ``runs`` on SQLite (its trigger check changes) while steps and tasks
    reference it: every run and reference survives both ways, and a run started by an alert
    remembers it."""
    _seed(store, ["production", "candidate"])
    with store.unit_of_work() as uow:
        runs = uow.runs.list("flights")
        for run in runs:
            uow.steps.start(run.id, "extract")
            uow.tasks.record(run.id, "JFK", status="succeeded", **_TASK)
    store.downgrade("0004")
    store.upgrade()
    assert store.schema_revision() == "0007"
    with store.unit_of_work() as uow:
        assert {r.id for r in uow.runs.list("flights")} == {r.id for r in runs}
        for run in runs:
            assert [s.name for s in uow.steps.for_run(run.id)] == ["extract"]
        started = uow.runs.create("flights", "drift", "", "c" * 64, "kiln.yaml", "h", 1, alert_id=7)
    with store.unit_of_work() as uow:
        assert (uow.runs.get(started.id).trigger, uow.runs.get(started.id).alert_id) == (
            "drift",
            7,
        )
    store.downgrade("0004")
    with store.engine.connect() as conn:
        triggers = conn.execute(sa.text('SELECT id, "trigger" FROM runs')).all()
        assert dict(triggers)[started.id] == "manual"
        assert conn.execute(sa.text("SELECT count(*) FROM steps")).scalar() == 2
    store.upgrade()
    assert store.schema_revision() == "0007"


_TASK: dict[str, Any] = {
    "started_at": datetime(2026, 1, 1, tzinfo=UTC),
    "finished_at": datetime(2026, 1, 1, tzinfo=UTC),
    "wall_seconds": 1.0,
    "cpu_seconds": 1.0,
    "peak_memory_bytes": 1,
    "rows_train": 1,
    "rows_holdout": 1,
    "metrics": {},
    "artifact_digest": None,
    "error": None,
    "log": "",
}


def test_0006_adds_cost_columns_and_tables_keeping_tasks_and_gate_results(
    store: MetadataStore,
) -> None:
    """0006 adds columns to tasks, steps and gate_results (a table rebuild on SQLite) and three
    tables: the rows recorded before survive both ways, with the new columns empty (unknown)."""
    _seed(store, ["production"])
    with store.unit_of_work() as uow:
        (run,) = uow.runs.list("flights")
        uow.steps.start(run.id, "extract")
        uow.tasks.record(run.id, "JFK", status="succeeded", **_TASK)
        uow.gates.record("flights", 1, "replay", "passed", "ok", {}, trigger="recheck")
    store.downgrade("0005")
    tables = set(sa.inspect(store.engine).get_table_names())
    assert not {"server_intervals", "serving_usage", "storage_usage"} & tables
    store.upgrade()
    assert store.schema_revision() == "0007"
    with store.engine.connect() as conn:
        task = conn.execute(
            sa.text("SELECT segment, base_memory_bytes, earlier_attempts FROM tasks")
        ).one()
        gate = conn.execute(
            sa.text("SELECT gate, wall_seconds, cpu_seconds, peak_memory_bytes FROM gate_results")
        ).one()
        step = conn.execute(sa.text("SELECT name, earlier_attempts FROM steps")).one()
    assert tuple(task) == ("JFK", None, None)
    assert tuple(gate) == ("replay", None, None, None)
    assert tuple(step) == ("extract", None)


def test_0007_adds_people_tables_and_removes_them_keeping_the_rest(store: MetadataStore) -> None:
    """0007 adds users, api_tokens and web_sessions; the role is checked by the database, a
    token hash is unique, and a downgrade drops the three tables and nothing else."""
    _seed(store, ["production"])
    with store.unit_of_work() as uow:
        uow.users.add("ana", "owner", pipelines="flights*")
        uow.tokens.add("ana", "laptop", "a" * 64)
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO users (name, role, created_at) VALUES ('x', 'god', :t)"),
            {"t": "2026-12-02 00:00:00"},
        )
    with pytest.raises(StoreError), store.unit_of_work() as uow:
        uow.tokens.add("ana", "again", "a" * 64)
    store.downgrade("0006")
    tables = set(sa.inspect(store.engine).get_table_names())
    assert not {"users", "api_tokens", "web_sessions"} & tables
    assert "model_versions" in tables
    store.upgrade()
    assert store.schema_revision() == "0007"
    with store.read() as uow:
        assert uow.users.list() == []
        assert [v.stage for v in uow.versions.list("flights")] == ["production"]
