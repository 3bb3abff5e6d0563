"""What the repositories return: frozen values, never ORM objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "ATTEMPT_FIELDS",
    "AuditRecord",
    "DeploymentAction",
    "DeploymentRecord",
    "FireRecord",
    "FireStatus",
    "GateRecord",
    "GateStatus",
    "GateTrigger",
    "LockRecord",
    "PipelineRecord",
    "RunRecord",
    "RunStatus",
    "RunTrigger",
    "Stage",
    "StepRecord",
    "StepStatus",
    "TaskRecord",
    "TaskStatus",
    "VersionRecord",
]

RunStatus = Literal["running", "succeeded", "failed", "interrupted"]
RunTrigger = Literal["manual", "schedule", "resume", "drift", "performance"]
StepStatus = Literal["running", "succeeded", "failed", "skipped"]
TaskStatus = Literal["succeeded", "failed"]
Stage = Literal["candidate", "shadow", "canary", "production", "archived", "blocked"]
DeploymentAction = Literal[
    "promote", "rollback", "shadow", "unshadow", "archive", "canary", "block"
]
GateStatus = Literal["passed", "failed", "pending", "skipped"]
GateTrigger = Literal["run", "watch", "recheck"]
FireStatus = Literal["running", "succeeded", "blocked", "retrying", "failed", "skipped"]

ATTEMPT_FIELDS = (
    "status",
    "started_at",
    "finished_at",
    "wall_seconds",
    "cpu_seconds",
    "peak_memory_bytes",
    "base_memory_bytes",
)
"""What is kept of a replaced attempt of a task or step (``earlier_attempts``); times as ISO
8601 text, a field the row lacks (a step's base memory) is left out."""


@dataclass(frozen=True, slots=True)
class PipelineRecord:
    name: str
    owner: str
    description: str
    config_path: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    pipeline: str
    status: RunStatus
    trigger: RunTrigger
    config_text: str
    config_digest: str
    config_path: str
    data_digest: str | None
    rows: dict[str, Any] | None
    code_revision: str | None
    host: str
    pid: int
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    model_version: int | None
    alert_id: int | None = None
    """The alert that started this run (trigger drift or performance)."""


@dataclass(frozen=True, slots=True)
class StepRecord:
    id: int
    run_id: str
    name: str
    status: StepStatus
    started_at: datetime
    finished_at: datetime | None
    wall_seconds: float | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None
    details: dict[str, Any]
    error: str | None
    earlier_attempts: list[dict[str, Any]] | None = None
    """The usage of the attempts a resume ran again (see :data:`ATTEMPT_FIELDS`)."""


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: int
    run_id: str
    segment: str
    status: TaskStatus
    attempt: int
    started_at: datetime
    finished_at: datetime
    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    rows_train: int
    rows_holdout: int
    metrics: dict[str, Any]
    artifact_digest: str | None
    error: str | None
    log: str
    base_memory_bytes: int | None = None
    """The worker's resident set when the task started (None: not measured, older runs)."""
    earlier_attempts: list[dict[str, Any]] | None = None
    """The usage of the attempts this row replaced (see :data:`ATTEMPT_FIELDS`)."""

    @property
    def own_memory_bytes(self) -> int | None:
        """What the task added to its worker's resident set (None: the base is unknown)."""
        if self.base_memory_bytes is None:
            return None
        return max(0, self.peak_memory_bytes - self.base_memory_bytes)


@dataclass(frozen=True, slots=True)
class VersionRecord:
    id: int
    pipeline: str
    version: int
    run_id: str
    stage: Stage
    manifest_digest: str
    created_at: datetime
    stage_changed_at: datetime
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    traffic_share: float | None = None

    @property
    def experiment(self) -> str | None:
        """The experiment that made this version (``kiln run --experiment``), if any: such a
        version is compared with production, never deployed."""
        name = (self.lineage or {}).get("experiment")
        return str(name) if name else None


@dataclass(frozen=True, slots=True)
class GateRecord:
    id: int
    pipeline: str
    version: int
    gate: str
    status: GateStatus
    summary: str
    evidence: dict[str, Any]
    evaluated_at: datetime
    trigger: GateTrigger = "run"
    champion_version: int | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class FireRecord:
    id: int
    pipeline: str
    due_at: datetime
    config_path: str
    scheduler: str
    status: FireStatus
    attempt: int
    run_id: str | None
    claimed_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    next_retry_at: datetime | None
    error: str | None
    trigger: str | None = None
    """``drift`` or ``performance`` for a retraining (None: a cron firing)."""
    alert_id: int | None = None

    def run_args(self) -> tuple[str, ...]:
        """The `kiln run` options of this firing: a retry or a takeover runs the same command."""
        if self.trigger is None:
            return ("--trigger", "schedule")
        alert = () if self.alert_id is None else ("--alert", str(self.alert_id))
        return ("--trigger", self.trigger, *alert)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    pipeline: str
    version: int | None
    reason: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """``version`` is the version the action is about; for promote and rollback,
    ``from_version`` is the production version it replaced (None when there was none)."""

    id: int
    pipeline: str
    version: int
    action: DeploymentAction
    from_version: int | None
    actor: str
    reason: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class LockRecord:
    pipeline: str
    run_id: str
    host: str
    pid: int
    acquired_at: datetime
    heartbeat_at: datetime
