"""Declarative tables of the metadata store. Migrations in kiln/stores/migrations must match."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AuditEvent",
    "Base",
    "Deployment",
    "GateResult",
    "ModelVersion",
    "Pipeline",
    "PipelineLock",
    "Run",
    "ScheduleFire",
    "Step",
    "Task",
    "UTCDateTime",
    "table_of",
]

NAMING_CONVENTION = {
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
RUN_TRIGGERS = ("manual", "schedule", "resume")
STEP_STATUSES = ("running", "succeeded", "failed", "skipped")
TASK_STATUSES = ("succeeded", "failed")
STAGES = ("candidate", "shadow", "canary", "production", "archived", "blocked")
DEPLOYMENT_ACTIONS = ("promote", "rollback", "shadow", "unshadow", "archive", "canary", "block")
GATE_STATUSES = ("passed", "failed", "pending", "skipped")
GATE_TRIGGERS = ("run", "watch", "recheck")
FIRE_STATUSES = ("running", "succeeded", "blocked", "retrying", "failed", "skipped")
ONE_PRODUCTION = "ux_model_versions_one_production"
_PRODUCTION = "stage = 'production'"


def _one_of(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f'"{column}" IN ({listed})', name=column)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the metadata store needs tz-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON()}


class Pipeline(Base):
    __tablename__ = "pipelines"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text)
    config_path: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        _one_of("status", RUN_STATUSES),
        _one_of("trigger", RUN_TRIGGERS),
        sa.Index("ix_runs_pipeline_started_at", "pipeline", "started_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.ForeignKey("pipelines.name"))
    status: Mapped[str] = mapped_column(sa.String(16))
    trigger: Mapped[str] = mapped_column(sa.String(16))
    config_text: Mapped[str] = mapped_column(sa.Text)
    config_digest: Mapped[str] = mapped_column(sa.String(64))
    config_path: Mapped[str] = mapped_column(sa.Text)
    data_digest: Mapped[str | None] = mapped_column(sa.String(64))
    rows: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    code_revision: Mapped[str | None] = mapped_column(sa.String(100))
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int]
    attempt: Mapped[int] = mapped_column(default=1)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    model_version: Mapped[int | None]


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (_one_of("status", STEP_STATUSES), sa.UniqueConstraint("run_id", "name"))

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id"))
    name: Mapped[str] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    wall_seconds: Mapped[float | None]
    cpu_seconds: Mapped[float | None]
    peak_memory_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    details: Mapped[dict[str, Any]]
    error: Mapped[str | None] = mapped_column(sa.Text)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (_one_of("status", TASK_STATUSES), sa.UniqueConstraint("run_id", "segment"))

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id"))
    segment: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(16))
    attempt: Mapped[int]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    wall_seconds: Mapped[float]
    cpu_seconds: Mapped[float]
    peak_memory_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    rows_train: Mapped[int]
    rows_holdout: Mapped[int]
    metrics: Mapped[dict[str, Any]]
    artifact_digest: Mapped[str | None] = mapped_column(sa.String(64))
    error: Mapped[str | None] = mapped_column(sa.Text)
    log: Mapped[str] = mapped_column(sa.Text)


class ModelVersion(Base):
    """At most one production version per pipeline is a partial unique index: the database
    itself refuses a second one, whatever process or crash is in between."""

    __tablename__ = "model_versions"
    __table_args__ = (
        _one_of("stage", STAGES),
        sa.UniqueConstraint("pipeline", "version"),
        sa.Index(
            ONE_PRODUCTION,
            "pipeline",
            unique=True,
            sqlite_where=sa.text(_PRODUCTION),
            postgresql_where=sa.text(_PRODUCTION),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.ForeignKey("pipelines.name"))
    version: Mapped[int]
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id"), unique=True)
    stage: Mapped[str] = mapped_column(sa.String(16))
    manifest_digest: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime]
    stage_changed_at: Mapped[datetime]
    metrics: Mapped[dict[str, Any]]
    lineage: Mapped[dict[str, Any]]
    traffic_share: Mapped[float | None] = mapped_column(sa.Float())
    """The share of live requests a ``canary`` version answers (None for other stages)."""


class AuditEvent(Base):
    """An audit event outlives what it names, so ``pipeline`` is a plain string, not a key."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.Index("ix_audit_events_pipeline_at", "pipeline", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(100))
    pipeline: Mapped[str] = mapped_column(sa.String(200))
    version: Mapped[int | None]
    reason: Mapped[str | None] = mapped_column(sa.Text)
    details: Mapped[dict[str, Any]]


class Deployment(Base):
    """One change of which version serves a pipeline (append-only). Like an audit event it
    outlives what it names, so ``pipeline`` is a plain string, not a key."""

    __tablename__ = "deployments"
    __table_args__ = (
        _one_of("action", DEPLOYMENT_ACTIONS),
        sa.Index("ix_deployments_pipeline_id", "pipeline", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.String(200))
    version: Mapped[int]
    action: Mapped[str] = mapped_column(sa.String(16))
    from_version: Mapped[int | None]
    actor: Mapped[str] = mapped_column(sa.String(200))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[datetime]


class GateResult(Base):
    """One outcome of one gate for one version, with its evidence. Results are history: a
    re-check adds a row beside the earlier ones (only a ``pending`` result is replaced by the
    outcome it waited for). ``trigger`` says what evaluated it (``run``: the release decision
    after the run, ``watch``: the live checks, ``recheck``: ``kiln gates check``) and
    ``champion_version`` which production version it was judged against (None: none). Like an
    audit event it outlives what it names: no foreign keys."""

    __tablename__ = "gate_results"
    __table_args__ = (
        _one_of("status", GATE_STATUSES),
        _one_of("trigger", GATE_TRIGGERS),
        sa.Index("ix_gate_results_pipeline_version", "pipeline", "version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.String(200))
    version: Mapped[int]
    gate: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    summary: Mapped[str] = mapped_column(sa.Text)
    evidence: Mapped[dict[str, Any]]
    evaluated_at: Mapped[datetime]
    trigger: Mapped[str] = mapped_column(sa.String(16))
    champion_version: Mapped[int | None]


class ScheduleFire(Base):
    """One cron firing of a pipeline, claimed by exactly one scheduler: the unique
    (pipeline, due_at) pair is the lock, so two schedulers never run the same firing twice."""

    __tablename__ = "schedule_fires"
    __table_args__ = (
        _one_of("status", FIRE_STATUSES),
        sa.UniqueConstraint("pipeline", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.String(200))
    due_at: Mapped[datetime]
    config_path: Mapped[str] = mapped_column(sa.Text)
    scheduler: Mapped[str] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(16))
    attempt: Mapped[int]
    run_id: Mapped[str | None] = mapped_column(sa.String(32))
    claimed_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    next_retry_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(sa.Text)


class PipelineLock(Base):
    """One row per pipeline with a live run; no foreign keys, so a lock can precede its run."""

    __tablename__ = "pipeline_locks"

    pipeline: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.String(32))
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int]
    acquired_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


def table_of(model: type[Base]) -> sa.Table:
    """The model's Table, typed as one (``__table__`` is typed as a FromClause)."""
    table = model.__table__
    if not isinstance(table, sa.Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table
