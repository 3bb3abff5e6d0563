"""What every gate shares: its result, the evidence it reads, and helpers on the versions it
compares (the version handle itself is :class:`kiln.registry.version.Version`).

A gate answers one question about a candidate version ("does it break a request production
answered?") with a :class:`GateResult`: a status and the evidence behind it (numbers, the
failing segments or requests), never a bare boolean. Gates read; they never change a stage.
The release controller (:mod:`kiln.release.controller`) stores the results and decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa

from kiln.config.deploy import DeployConfig
from kiln.errors import NotFoundError
from kiln.executors import Usage
from kiln.registry.version import Version
from kiln.stores import Stores
from kiln.stores.capture import read_captures

__all__ = [
    "Gate",
    "GateContext",
    "GateResult",
    "GateStatus",
    "allowed_range",
    "on_classes",
    "routed_as_worse",
    "target_std",
]

GateStatus = Literal["passed", "failed", "pending", "skipped"]
MAX_EXAMPLES = 20
"""Failing requests or rows listed in a gate's evidence (the counts are always complete)."""


@dataclass(frozen=True)
class GateResult:
    gate: str
    status: GateStatus
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    usage: Usage | None = None
    """The gate's own compute, measured around its evaluation (None: not measured)."""

    @property
    def ok(self) -> bool:
        """Whether the gate lets the version go on (``skipped``: it did not apply)."""
        return self.status in ("passed", "skipped")


def allowed_range(version: Version) -> tuple[float, float]:
    """The answers a version may give: ``deploy.gates.data_quality.prediction_range`` when set,
    else [0, 1] for a classifier (a probability), else any finite number."""
    configured = version.policy.gates.data_quality.prediction_range
    lo, hi = (0.0, 1.0) if version.predictor.task == "classification" else (-math.inf, math.inf)
    if configured is not None:
        lo = lo if configured.min is None else configured.min
        hi = hi if configured.max is None else configured.max
    return lo, hi


def on_classes(proba: Any, own: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Class probabilities with a column per class of ``own``, as columns in the order of
    ``classes`` (matched by name): a class ``own`` lacks has probability 0, and a class
    ``classes`` lacks is dropped. How a candidate's classes meet another version's."""
    values = np.asarray(proba, dtype=np.float64)
    if list(own) == list(classes):
        return values
    out = np.zeros((values.shape[0], len(classes)), dtype=np.float64)
    column = {c: j for j, c in enumerate(classes)}
    for k, c in enumerate(own):
        j = column.get(c)
        if j is not None:
            out[:, j] = values[:, k]
    return out


def routed_as_worse(manifest: dict[str, Any]) -> dict[str, str]:
    """The segments that a version (its ``manifest``) serves by its fallback because their own
    model scored worse than the fallback on their holdout (``segments.route_worse_to_fallback``):
    the reason of each. A deliberate choice of the version, not a lost segment."""
    routed = manifest.get("routed_to_fallback") or {}
    return {
        str(seg): str(info.get("reason"))
        for seg, info in routed.items()
        if isinstance(info, dict) and "own_metrics" in info
    }


def target_std(version: Version) -> float | None:
    """The standard deviation of the target over the version's training rows (its reference
    profile), or None when it records none."""
    profile = version.manifest.get("reference_profile") or {}
    std = (profile.get("__target__") or {}).get("std")
    return float(std) if isinstance(std, int | float) and math.isfinite(std) else None


class GateContext:
    """What gates read besides the two versions: the time, the policy and the captures."""

    def __init__(
        self,
        stores: Stores,
        capture_root: str,
        policy: DeployConfig,
        *,
        now: datetime | None = None,
    ) -> None:
        self.stores = stores
        self.capture_root = capture_root
        self.policy = policy
        self.now = now or datetime.now(UTC)
        self._captures: dict[tuple[str, str | None, int | None, datetime | None], pa.Table] = {}

    def captures(
        self,
        pipeline: str,
        *,
        stage: str | None = "production",
        last: int | None = None,
        since: datetime | None = None,
    ) -> pa.Table | None:
        """The captured requests (oldest first, columns of ``CAPTURE_SCHEMA`` + pipeline), or
        None when the pipeline has none yet."""
        key = (pipeline, stage, last, since)
        if key not in self._captures:
            try:
                table = read_captures(
                    self.capture_root, pipeline, stage=stage, last=last, since=since
                )
            except NotFoundError:
                return None
            self._captures[key] = table
        return self._captures[key]


class Gate(Protocol):
    """``evaluate`` never raises for a failing candidate: it returns a failed result."""

    name: str

    def evaluate(
        self, candidate: Version, champion: Version | None, context: GateContext
    ) -> GateResult: ...
