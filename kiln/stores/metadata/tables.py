"""Declarative tables of the metadata store. Migrations in kiln/stores/migrations must match."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Alert",
    "AlertDelivery",
    "AuditEvent",
    "Base",
    "Deployment",
    "GateResult",
    "ModelVersion",
    "MonitorWindow",
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
RUN_TRIGGERS = ("manual", "schedule", "resume", "drift", "performance")
STEP_STATUSES = ("running", "succeeded", "failed", "skipped")
TASK_STATUSES = ("succeeded", "failed")
STAGES = ("candidate", "shadow", "canary", "production", "archived", "blocked")
DEPLOYMENT_ACTIONS = ("promote", "rollback", "shadow", "unshadow", "archive", "canary", "block")
GATE_STATUSES = ("passed", "failed", "pending", "skipped")
GATE_TRIGGERS = ("run", "watch", "recheck")
FIRE_STATUSES = ("running", "succeeded", "blocked", "retrying", "failed", "skipped")
WINDOW_STATES = ("ok", "warn", "alert", "no_traffic")
ALERT_KINDS = ("drift", "performance", "latency", "errors", "traffic", "budget")
ALERT_LEVELS = ("warn", "alert")
ALERT_STATUSES = ("pending", "open", "resolved")
DELIVERY_EVENTS = ("opened", "resolved")
DELIVERY_STATUSES = ("pending", "delivered", "failed")
ONE_PRODUCTION = "ux_model_versions_one_production"
ONE_EPISODE = "ux_alerts_one_episode"
_PRODUCTION = "stage = 'production'"
_LIVE_EPISODE = "status IN ('pending', 'open')"


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
    alert_id: Mapped[int | None]
    """The alert that started this run (trigger drift or performance)."""


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
    trigger: Mapped[str | None] = mapped_column(sa.String(16))
    """The `kiln run --trigger` of a firing that is no cron firing (``drift``, ``performance``:
    a retraining); None for a cron firing (``schedule``)."""
    alert_id: Mapped[int | None]
    """The alert a retraining firing runs for (`kiln run --alert`)."""


class PipelineLock(Base):
    """One row per pipeline with a live run; no foreign keys, so a lock can precede its run."""

    __tablename__ = "pipeline_locks"

    pipeline: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.String(32))
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int]
    acquired_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


class MonitorWindow(Base):
    """One computed monitor window of a pipeline. The unique (pipeline, window_start,
    window_seconds) makes two monitors that compute the same window store it once."""

    __tablename__ = "monitor_windows"
    __table_args__ = (
        _one_of("state", WINDOW_STATES),
        sa.UniqueConstraint("pipeline", "window_start", "window_seconds"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.String(200))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    window_seconds: Mapped[int]
    computed_at: Mapped[datetime]
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    state: Mapped[str] = mapped_column(sa.String(16))
    worst: Mapped[str | None] = mapped_column(sa.Text)
    summary: Mapped[dict[str, Any]]


class Alert(Base):
    """An alert episode of one check of a pipeline: pending while its figure has been over a
    threshold for fewer windows than ``monitor.consecutive``, open (notified once) from then,
    resolved when the figure recovers. At most one pending-or-open episode per check."""

    __tablename__ = "alerts"
    __table_args__ = (
        _one_of("kind", ALERT_KINDS),
        _one_of("level", ALERT_LEVELS),
        _one_of("status", ALERT_STATUSES),
        sa.Index(
            ONE_EPISODE,
            "pipeline",
            "check",
            unique=True,
            sqlite_where=sa.text(_LIVE_EPISODE),
            postgresql_where=sa.text(_LIVE_EPISODE),
        ),
        sa.Index("ix_alerts_pipeline_status", "pipeline", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.String(200))
    check: Mapped[str] = mapped_column(sa.String(300))
    kind: Mapped[str] = mapped_column(sa.String(16))
    level: Mapped[str] = mapped_column(sa.String(8))
    status: Mapped[str] = mapped_column(sa.String(16))
    streak: Mapped[int]
    opened_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    first_window: Mapped[datetime]
    last_window: Mapped[datetime]
    value: Mapped[float | None]
    threshold: Mapped[float | None]
    message: Mapped[str] = mapped_column(sa.Text)
    details: Mapped[dict[str, Any]]
    notified_at: Mapped[datetime | None]
    acked_by: Mapped[str | None] = mapped_column(sa.String(200))
    acked_at: Mapped[datetime | None]
    ack_note: Mapped[str | None] = mapped_column(sa.Text)


class AlertDelivery(Base):
    """One notification of an alert event to one channel: the outbox. A notification that
    could not be delivered stays pending and is retried on a later pass, never lost."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        _one_of("event", DELIVERY_EVENTS),
        _one_of("status", DELIVERY_STATUSES),
        sa.UniqueConstraint("alert_id", "event", "channel"),
        sa.Index("ix_alert_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(sa.ForeignKey("alerts.id"))
    event: Mapped[str] = mapped_column(sa.String(16))
    channel: Mapped[str] = mapped_column(sa.String(500))
    status: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


def table_of(model: type[Base]) -> sa.Table:
    """The model's Table, typed as one (``__table__`` is typed as a FromClause)."""
    table = model.__table__
    if not isinstance(table, sa.Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table
