"""What a release decision is made of: the outcome after a run, a re-check's results, the
actor of automatic changes, and running one gate so that a gate that cannot run fails."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Literal

from kiln.errors import KilnError
from kiln.executors import Usage
from kiln.gates.base import Gate, GateContext, GateResult
from kiln.registry.version import Version
from kiln.runs.reporting import Measured, Meter

__all__ = ["SYSTEM_ACTOR", "Decision", "Outcome", "Recheck", "measured", "run_gate"]

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "kiln"
Outcome = Literal["promoted", "canary", "shadow", "blocked", "ready", "unchanged"]


@dataclass(frozen=True)
class Decision:
    pipeline: str
    version: int
    outcome: Outcome
    message: str
    results: list[GateResult] = field(default_factory=list)


@dataclass(frozen=True)
class Recheck:
    """What ``kiln gates check`` found: the new results, the champion they were judged against
    (None: none), and whether that champion is the one of the release decision."""

    results: list[GateResult]
    champion: int | None
    as_decided: bool


def run_gate(
    gate: Gate, candidate: Version, champion: Version | None, context: GateContext
) -> GateResult:
    """A gate that cannot run fails the version, with the reason as its evidence. The result
    carries the gate's own compute (wall, CPU, peak memory of this process)."""
    meter = Meter()
    try:
        result = gate.evaluate(candidate, champion, context)
    except KilnError as e:
        result = GateResult(gate.name, "failed", f"the gate could not run: {e}", {"error": str(e)})
    except Exception as e:  # a bug in a gate must block, not promote, and must be visible
        logger.exception("gate %s failed on %r", gate.name, candidate)
        result = GateResult(
            gate.name,
            "failed",
            f"the gate crashed: {type(e).__name__}: {e}",
            {"error": f"{type(e).__name__}: {e}"},
        )
    return measured(result, meter)


def measured(result: GateResult, meter: Meter) -> GateResult:
    """``result`` with the usage ``meter`` measured since it started."""
    m = meter.read(Measured())
    usage = Usage(m.wall_seconds, m.cpu_seconds, m.peak_memory_bytes)
    return replace(result, usage=usage)
