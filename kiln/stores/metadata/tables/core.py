"""The tables of pipelines, runs, versions, deployments, gates, schedules and locks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from kiln.stores.metadata.tables.base import (
    DEPLOYMENT_ACTIONS,
    FIRE_STATUSES,
    GATE_STATUSES,
    GATE_TRIGGERS,
    ONE_PRODUCTION,
    PRODUCTION_WHERE,
    RUN_STATUSES,
    RUN_TRIGGERS,
    STAGES,
    STEP_STATUSES,
    TASK_STATUSES,
    Base,
    one_of,
)


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
        one_of("status", RUN_STATUSES),
        one_of("trigger", RUN_TRIGGERS),
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
    __table_args__ = (one_of("status", STEP_STATUSES), sa.UniqueConstraint("run_id", "name"))

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
    earlier_attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(
        sa.JSON(none_as_null=True)
    )
    """The usage of this step's earlier attempts that a resume ran again (cost counts them)."""


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (one_of("status", TASK_STATUSES), sa.UniqueConstraint("run_id", "segment"))

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
    base_memory_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    """The worker's resident set when the task started (what it held before): the task itself
    added ``peak_memory_bytes - base_memory_bytes``. None: not measured (older runs)."""
    earlier_attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(
        sa.JSON(none_as_null=True)
    )
    """The usage of this task's earlier failed attempts (cost counts them)."""
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
        one_of("stage", STAGES),
        sa.UniqueConstraint("pipeline", "version"),
        sa.Index(
            ONE_PRODUCTION,
            "pipeline",
            unique=True,
            sqlite_where=sa.text(PRODUCTION_WHERE),
            postgresql_where=sa.text(PRODUCTION_WHERE),
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
        one_of("action", DEPLOYMENT_ACTIONS),
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
        one_of("status", GATE_STATUSES),
        one_of("trigger", GATE_TRIGGERS),
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
    wall_seconds: Mapped[float | None]
    cpu_seconds: Mapped[float | None]
    peak_memory_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    """The gate's own compute (None: not measured). A gate inside a run is also inside the
    run's ``release`` step: cost counts only results of triggers ``watch`` and ``recheck``."""


class ScheduleFire(Base):
    """One cron firing of a pipeline, claimed by exactly one scheduler: the unique
    (pipeline, due_at) pair is the lock, so two schedulers never run the same firing twice."""

    __tablename__ = "schedule_fires"
    __table_args__ = (
        one_of("status", FIRE_STATUSES),
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
