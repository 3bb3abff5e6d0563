"""What a watch pass did, as typed events that the CLI prints and that alerts and the UI consume.

``Release.tick`` / ``tick_all`` (``kiln watch``, every pass of ``kiln scheduler``) return one
:class:`ReleaseEvent` per change they made: its ``message`` is the line the CLI prints, its
``kind`` says what happened, ``details`` carries the evidence (the gate and its numbers, the
version rolled back to, the run that died before releasing its version).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["EventKind", "ReleaseEvent"]


class EventKind(StrEnum):
    PROMOTED = "promoted"
    """A shadow passed its period and went to production."""
    CANARY_STARTED = "canary_started"
    """A shadow passed its period and serves a canary share of the traffic."""
    SHADOW_PASSED = "shadow_passed"
    """A shadow passed its period and waits (``deploy.auto_promote`` off, or it was moved
    meanwhile): ``details["outcome"]`` says which."""
    CANARY_PROMOTED = "canary_promoted"
    """A canary stayed healthy for its watch window and went to production."""
    BLOCKED = "blocked"
    """A shadow or canary failed its live gate (``details["gate"]``) and was blocked."""
    ROLLED_BACK = "rolled_back"
    """A new production version was unhealthy within its watch window and was rolled back to
    ``details["to_version"]``."""
    ROLLBACK_REFUSED = "rollback_refused"
    """A new production version is unhealthy but there is nothing to roll back to."""
    RELEASED_UNGATED = "released_ungated"
    """A candidate that a dead run left ungated was gated and released; ``details["outcome"]``
    is the decision (promoted, canary, shadow, blocked, ready, unchanged)."""


@dataclass(frozen=True, slots=True)
class ReleaseEvent:
    pipeline: str
    version: int
    """The version the event is about (for a rollback: the version rolled back)."""
    kind: EventKind
    message: str
    """One line for people: what ``kiln watch`` and ``kiln scheduler`` print."""
    at: datetime
    """When the watch pass made the change (the controller's clock, UTC)."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """Machine-readable evidence: ``gate``, ``evidence`` (the gate's numbers), ``outcome``,
    ``to_version``, ``run_id``, ... depending on the kind."""
