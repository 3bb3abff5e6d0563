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
import pyarrow.compute as pc

from kiln.config.deploy import DeployConfig
from kiln.config.deploy import ReplayGate as ReplayPolicy
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
    "capture_span",
    "on_classes",
    "routed_as_worse",
    "target_std",
    "tolerance",
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


def capture_span(*tables: pa.Table | None) -> dict[str, str]:
    """``captures_from`` and ``captures_until``: the earliest and latest capture time (ISO,
    UTC) of the captures a gate read, for its evidence (`kiln gc` keeps the capture files of
    those days while the version is not archived: the evidence names their request ids).
    Empty when the gate read no capture."""
    times = [t for t in tables if t is not None and t.num_rows > 0]
    if not times:
        return {}
    lows, highs = zip(*(pc.min_max(t["ts"]).values() for t in times), strict=True)
    first, last = min(x.as_py() for x in lows), max(x.as_py() for x in highs)
    return {"captures_from": _iso_utc(first), "captures_until": _iso_utc(last)}


def _iso_utc(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def tolerance(
    policy: ReplayPolicy, candidate: Version, champion: Version | None
) -> tuple[float | None, str]:
    """How far an answer may move, and where that number comes from: ``max_abs_diff`` when
    set; else, for a classifier, ``max_probability_diff``; else ``max_abs_diff_std`` times the
    standard deviation of the target over the training rows (the candidate's reference
    profile, else the champion's)."""
    where = "deploy.gates.replay"
    if policy.max_abs_diff is not None:
        return policy.max_abs_diff, f"{where}.max_abs_diff"
    if candidate.predictor.task != "regression":
        return policy.max_probability_diff, f"{where}.max_probability_diff (on probabilities)"
    for version in (candidate, champion):
        std = None if version is None else target_std(version)
        if version is not None and std:
            k = policy.max_abs_diff_std
            return k * std, (
                f"{where}.max_abs_diff_std {k:g} x the target's std at training {std:.4g}"
                f" ({version.label}'s manifest)"
            )
    return None, "none: no max_abs_diff set and no target spread recorded at training"


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
