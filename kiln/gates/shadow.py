"""The shadow gate: how did the candidate do on the real traffic it shadowed?

While a version is in shadow the server sends it a copy of each production request and
captures its answer beside production's, under the same request id. The shadow period starts
at the version's latest ``shadow`` deployment event (and ends at its next stage change, if
any). Until ``deploy.shadow.min_duration`` has passed and ``min_requests`` shadow captures of
the version exist, the gate is ``pending``; then it compares the shadow captures with the
production captures of the same requests: the shadow error rate, its p99 latency against
production's, and how far its answers moved (overall and per segment).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kiln.config.deploy import ShadowPolicy
from kiln.gates.base import (
    MAX_EXAMPLES,
    GateContext,
    GateResult,
    GateStatus,
    capture_span,
    on_classes,
)
from kiln.monitoring.live import live_stats
from kiln.registry.version import Version

__all__ = ["ShadowGate", "ShadowPeriod", "shadow_period"]

_NO_SEGMENT = "(null)"
_CLOCK_SKEW = timedelta(minutes=5)
"""Captures are stamped by the serving replicas' clocks and the shadow event by the clock of
whoever shadowed the version: captures this much older than the event still count."""


@dataclass(frozen=True)
class ShadowPeriod:
    started_at: datetime
    ended_at: datetime | None
    """When the version left shadow (unshadowed, promoted, blocked...); None while in it."""


def shadow_period(candidate: Version, context: GateContext) -> ShadowPeriod | None:
    """The candidate's latest shadow period, from the deployment history (newest first); the
    stage change time when the version is in shadow with no event; None when never shadowed."""
    with context.stores.metadata.read() as uow:
        history = uow.deployments.list(candidate.pipeline, limit=None)
    ended: datetime | None = None
    for event in history:
        if event.version != candidate.number:
            continue
        if event.action == "shadow":
            return ShadowPeriod(event.at, ended)
        ended = event.at  # the oldest later event of the version ended the period
    if candidate.record.stage == "shadow":
        return ShadowPeriod(candidate.record.stage_changed_at, None)
    return None


class ShadowGate:
    """Pending until the shadow period is long enough; then fails when the shadow error rate,
    the p99 latency ratio to production or the mean prediction shift is over its limit (for a
    multiclass candidate the shift of a request is max |Δp| over the classes)."""

    name = "shadow"

    def evaluate(
        self, candidate: Version, champion: Version | None, context: GateContext
    ) -> GateResult:
        policy = context.policy.shadow
        label = candidate.label
        if policy.min_duration <= timedelta(0) and policy.min_requests == 0:
            return self._result(
                "skipped", "no shadow period asked (deploy.shadow: min_duration 0, min_requests 0)"
            )
        period = shadow_period(candidate, context)
        if period is None:
            wanted = {
                "min_duration_seconds": policy.min_duration.total_seconds(),
                "min_requests": policy.min_requests,
            }
            return self._result(
                "pending",
                f"{label} has not been in shadow: `kiln shadow {candidate.pipeline}"
                f" {candidate.number}` starts its shadow period",
                wanted,
            )
        since = period.started_at - _CLOCK_SKEW
        shadow = _captures_of(
            context.captures(candidate.pipeline, stage="shadow", since=since),
            candidate.number,
            period.ended_at,
        )
        until = period.ended_at or context.now
        elapsed = max(until - period.started_at, timedelta(0))
        progress = {
            "version": candidate.number,
            "started_at": period.started_at.isoformat(),
            "ended_at": None if period.ended_at is None else period.ended_at.isoformat(),
            "elapsed_seconds": elapsed.total_seconds(),
            "min_duration_seconds": policy.min_duration.total_seconds(),
            "requests": shadow.num_rows,
            "min_requests": policy.min_requests,
            **capture_span(shadow),
        }
        if elapsed < policy.min_duration or shadow.num_rows < policy.min_requests:
            return self._result(
                "pending",
                f"{label} in shadow for {_duration(elapsed)} of {_duration(policy.min_duration)},"
                f" {shadow.num_rows:,} of {policy.min_requests:,} requests",
                progress,
            )

        production = context.captures(candidate.pipeline, stage="production", since=since)
        status, summary, evidence = _judge(candidate, shadow, production, policy, elapsed)
        return self._result(status, summary, progress | evidence | capture_span(shadow, production))

    def _result(
        self, status: GateStatus, summary: str, evidence: dict[str, Any] | None = None
    ) -> GateResult:
        return GateResult(self.name, status, summary, evidence or {})


def _judge(
    candidate: Version,
    shadow: pa.Table,
    production: pa.Table | None,
    policy: ShadowPolicy,
    elapsed: timedelta,
) -> tuple[GateStatus, str, dict[str, Any]]:
    """The verdict on a shadow period that is long enough: status, summary, evidence."""
    label = candidate.label
    pairs = _pairs(shadow, production)
    stats = live_stats(shadow, candidate.number, stage="shadow")
    prod_p99 = _p99(pairs["production_latency_ms"])
    classes = candidate.predictor.classes
    by_class = None
    if classes is not None and candidate.predictor.multiclass:
        by_class = _Classes(classes, shadow, production)
    shift = _shift(pairs, by_class)
    ratio = None
    if stats.p99_ms is not None and prod_p99:
        ratio = stats.p99_ms / prod_p99
    mean_shift = shift.get("mean_shift")
    checks = [
        _check("error_rate", stats.error_rate, policy.max_error_rate),
        _check("p99_ratio", ratio, policy.max_p99_ratio),
        _check("mean_shift", mean_shift, policy.max_mean_shift),
    ]
    evidence: dict[str, Any] = {
        "shadow": stats.as_evidence(),
        "paired": pairs.num_rows,
        "compared": shift.get("compared", 0),
        "production_p99_ms": prod_p99,
        "p99_ratio": ratio,
        "production_versions": _versions(pairs),
        "mean_shift": mean_shift,
        "max_shift": shift.get("max_shift"),
        "segments": shift.get("segments", {}),
        "checks": checks,
        "error_examples": _error_examples(shadow),
    }
    failed = {c["check"] for c in checks if not c["ok"]}
    why: list[str] = []
    if "error_rate" in failed:
        why.append(
            f"error rate {stats.error_rate:.2%} > {policy.max_error_rate:.2%}"
            f" ({stats.errors:,} of {stats.requests:,} shadow requests failed)"
        )
    if "p99_ratio" in failed:
        why.append(
            f"p99 latency {stats.p99_ms:.1f} ms is {ratio:.2f}x production's {prod_p99:.1f} ms"
            f" (at most {policy.max_p99_ratio:g}x)"
        )
    if "mean_shift" in failed:
        why.append(f"answers moved {mean_shift:.4g} on average (at most {policy.max_mean_shift:g})")
    if why:
        return "failed", f"{label} in shadow: " + "; ".join(why), evidence
    if pairs.num_rows == 0:
        return (
            "pending",
            f"no production capture shares a request id with the {shadow.num_rows:,} shadow"
            f" captures of {label} yet: latency and answers cannot be compared",
            evidence,
        )
    parts = [f"error rate {stats.error_rate:.2%}"]
    if ratio is not None:
        parts.append(f"p99 {stats.p99_ms:.1f} ms ({ratio:.2f}x production)")
    if mean_shift is not None:
        parts.append(f"mean shift {mean_shift:.4g}")
    summary = f"{label} shadowed {stats.requests:,} requests over {_duration(elapsed)}: "
    summary += ", ".join(parts)
    return "passed", summary, evidence


_SHADOW = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("version", pa.int32()),
        ("stage", pa.string()),
        ("segment", pa.string()),
        ("prediction", pa.float64()),
        ("error", pa.string()),
        ("latency_ms", pa.float64()),
    ]
)


def _captures_of(table: pa.Table | None, version: int, ended_at: datetime | None) -> pa.Table:
    """The shadow captures of ``version`` in its period."""
    if table is None:
        return _SHADOW.empty_table()
    keep = pc.equal(table["version"], version)
    if ended_at is not None:
        end = pa.scalar(ended_at, table.schema.field("ts").type)
        keep = pc.and_(keep, pc.less(table["ts"], end))
    return table.filter(keep)


_PROBABILITIES = "probabilities"
_PAIRS = pa.schema(
    [
        ("request_id", pa.string()),
        ("segment", pa.string()),
        ("prediction", pa.float64()),
        ("latency_ms", pa.float64()),
        ("production_version", pa.int32()),
        ("production_prediction", pa.float64()),
        ("production_latency_ms", pa.float64()),
    ]
)


def _pairs(shadow: pa.Table, production: pa.Table | None) -> pa.Table:
    """Each shadow capture beside the production capture of the same request id."""
    if production is None or production.num_rows == 0 or shadow.num_rows == 0:
        return _PAIRS.empty_table()
    left = shadow.select(["request_id", "segment", "prediction", "latency_ms"])
    right = production.filter(pc.is_in(production["request_id"], value_set=left["request_id"]))
    if right.num_rows == 0:
        return _PAIRS.empty_table()
    right = right.select(["request_id", "version", "prediction", "latency_ms"]).rename_columns(
        ["request_id", "production_version", "production_prediction", "production_latency_ms"]
    )
    return left.join(right, "request_id", join_type="inner").select(_PAIRS.names)


def _check(name: str, value: float | None, limit: float | None) -> dict[str, Any]:
    """One limit of the policy; a value or limit that is unknown does not fail it."""
    ok = value is None or limit is None or value <= limit
    return {"check": name, "value": value, "limit": limit, "ok": ok}


def _p99(latency: pa.ChunkedArray) -> float | None:
    values = latency.to_numpy(zero_copy_only=False).astype(np.float64)
    return float(np.percentile(values, 99)) if values.size else None


def _shift(pairs: pa.Table, classes: _Classes | None = None) -> dict[str, Any]:
    """Mean and max |shadow - production| over the requests both answered, and per segment.

    With ``classes`` (a multiclass candidate) the shift of a request is max |Δp| over the
    classes, from the captured probabilities (a request captured without them is not compared).
    """
    if classes is not None:
        shift = classes.shift(pairs["request_id"].to_pylist())
        both = ~np.isnan(shift)
        if not both.any():
            return {}
        diff = shift[both]
    else:
        shadow = pairs["prediction"].to_numpy(zero_copy_only=False).astype(np.float64)
        production = pairs["production_prediction"].to_numpy(zero_copy_only=False)
        production = production.astype(np.float64)
        both = ~(np.isnan(shadow) | np.isnan(production))
        if not both.any():
            return {}
        diff = np.abs(shadow[both] - production[both])
    segments = pd.Series(pairs["segment"].to_pylist(), dtype=object)[both].fillna(_NO_SEGMENT)
    table = pd.DataFrame({"segment": segments.to_numpy(), "shift": diff})
    per_segment = table.groupby("segment", sort=True)["shift"].agg(["size", "mean", "max"])
    return {
        "compared": int(diff.size),
        "mean_shift": float(diff.mean()),
        "max_shift": float(diff.max()),
        "segments": {
            str(seg): {"requests": int(n), "mean_shift": float(mean), "max_shift": float(top)}
            for seg, n, mean, top in per_segment.itertuples()
        },
    }


class _Classes:
    """The captured class probabilities of a multiclass candidate's shadow and production
    answers, by request id (Arrow joins no map columns, so they are matched here)."""

    def __init__(self, classes: list[str], shadow: pa.Table, production: pa.Table | None) -> None:
        self.classes = classes
        self.shadow = _by_request(shadow)
        self.production = {} if production is None else _by_request(production)

    def shift(self, request_ids: list[str]) -> np.ndarray:
        """max |Δp| over the classes per request (a class one side lacks has probability 0
        there); NaN where either side was captured without probabilities."""
        out = np.full(len(request_ids), np.nan)
        for i, rid in enumerate(request_ids):
            a, b = self.shadow.get(rid), self.production.get(rid)
            if a is not None and b is not None:
                out[i] = np.abs(self._row(a) - self._row(b)).max()
        return out

    def _row(self, probabilities: dict[str, float | None]) -> np.ndarray:
        values = [[0.0 if p is None else p for p in probabilities.values()]]
        return on_classes(values, list(probabilities), self.classes)[0]


def _by_request(table: pa.Table) -> dict[str, dict[str, float | None]]:
    if _PROBABILITIES not in table.column_names:
        return {}
    ids = table["request_id"].to_pylist()
    maps = table[_PROBABILITIES].to_pylist()
    return {rid: dict(m) for rid, m in zip(ids, maps, strict=True) if m is not None}


def _versions(pairs: pa.Table) -> dict[str, int]:
    if pairs.num_rows == 0:
        return {}
    counts = pc.value_counts(pairs["production_version"]).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in counts}


def _error_examples(shadow: pa.Table) -> list[dict[str, Any]]:
    failed = shadow.filter(pc.is_null(shadow["prediction"])).slice(0, MAX_EXAMPLES)
    return [
        {"request_id": r["request_id"], "error": r["error"]}
        for r in failed.select(["request_id", "error"]).to_pylist()
    ]


def _duration(d: timedelta) -> str:
    seconds = d.total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
