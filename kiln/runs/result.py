"""What a run returns: the version it registered, or where it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunResult", "StoppedRun"]


@dataclass(frozen=True)
class RunResult:
    run_id: str
    pipeline: str
    version: int | None
    """None: nothing was registered (the run was identical to production, see unchanged_from)."""
    manifest_digest: str | None
    manifest: dict[str, Any]
    reused_tasks: int = 0
    warnings: list[str] = field(default_factory=list)
    experiment: str | None = None
    partial: dict[str, Any] | None = None
    unchanged_from: int | None = None
    """The production version whose data, config and code this run had: with
    ``deploy.on_unchanged: skip`` nothing was registered; with ``register`` the version is a
    candidate that must not be gated nor promoted."""
    released: dict[str, Any] | None = None
    """What the release step recorded (``outcome``: promoted, blocked, skipped...)."""


@dataclass(frozen=True)
class StoppedRun:
    """A run asked to stop after one step (``kiln run --step``): nothing packaged or
    registered; its steps and tasks are recorded like any run's."""

    run_id: str
    pipeline: str
    stopped_after: str
    data_digest: str
    reused_from: str | None = None
