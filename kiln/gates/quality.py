"""Data quality: the training data passed its checks, and the candidate's answers on its own
holdout are finite, in range, and mostly not the fallback's. A multiclass candidate's answer is a
row of class probabilities: each must be finite and in range, and the row must sum to 1."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.gates.base import MAX_EXAMPLES, GateContext, GateResult, allowed_range
from kiln.registry import Prediction
from kiln.registry.version import Version

__all__ = ["DataQualityGate"]

SUM_TOLERANCE = 1e-3
"""How far a multiclass answer's probabilities may sum from 1."""


class DataQualityGate:
    name = "data_quality"

    def evaluate(
        self, candidate: Version, champion: Version | None, context: GateContext
    ) -> GateResult:
        policy = candidate.policy.gates.data_quality
        training = _training_checks(candidate)
        rows = candidate.holdout
        prediction = candidate.predictor.predict(rows)
        values = prediction.values
        lo, hi = allowed_range(candidate)
        proba = prediction.probabilities
        if proba is None:
            nonfinite = ~np.isfinite(values)
            outside = np.isfinite(values) & ((values < lo) | (values > hi))
            off_sum = np.zeros(len(values), dtype=bool)
        else:
            nonfinite = ~np.isfinite(proba).all(axis=1)
            outside = ~nonfinite & ((proba < lo) | (proba > hi)).any(axis=1)
            off_sum = ~nonfinite & (np.abs(proba.sum(axis=1) - 1.0) > SUM_TOLERANCE)
        fallback_share = float(prediction.fallback.mean()) if len(values) else 0.0
        problems: list[str] = []
        if training.get("failed"):
            problems.append(f"training data failed checks: {training['failed']}")
        if nonfinite.any():
            problems.append(f"{int(nonfinite.sum())} non-finite predictions")
        if outside.any():
            problems.append(f"{int(outside.sum())} predictions outside [{lo}, {hi}]")
        if off_sum.any():
            problems.append(
                f"{int(off_sum.sum())} predictions whose class probabilities do not sum to 1"
                f" (within {SUM_TOLERANCE:g})"
            )
        if fallback_share > policy.max_fallback_share:
            problems.append(
                f"{fallback_share:.1%} of holdout rows answered by the fallback"
                f" (at most {policy.max_fallback_share:.1%})"
            )
        bad = np.flatnonzero(nonfinite | outside | off_sum)[:MAX_EXAMPLES]
        evidence: dict[str, Any] = {
            "training_checks": training,
            "holdout_rows": len(values),
            "predictions": _summary(values),
            "allowed_range": [_num(lo), _num(hi)],
            "nonfinite": int(nonfinite.sum()),
            "out_of_range": int(outside.sum()),
            **({} if proba is None else {"probabilities_not_summing_to_1": int(off_sum.sum())}),
            "fallback_share": round(fallback_share, 6),
            "max_fallback_share": policy.max_fallback_share,
            "fallback_by_segment": _fallback_by_segment(candidate, rows, prediction.fallback),
            "examples": [_example(prediction, int(i)) for i in bad],
        }
        if problems:
            return GateResult(self.name, "failed", "; ".join(problems), evidence)
        what = "predictions" if proba is None else "predictions (class probabilities summing to 1)"
        summary = (
            f"{len(values)} holdout {what} finite and in range; "
            f"{fallback_share:.1%} answered by the fallback"
        )
        return GateResult(self.name, "passed", summary, evidence)


def _example(prediction: Prediction, i: int) -> dict[str, Any]:
    example: dict[str, Any] = {
        "row": i,
        "prediction": _num(float(prediction.values[i])),
        "model": prediction.model[i],
    }
    if prediction.probabilities is not None and prediction.classes is not None:
        row = prediction.probabilities[i].tolist()
        example["probabilities"] = {
            c: _num(float(p)) for c, p in zip(prediction.classes, row, strict=True)
        }
    return example


def _training_checks(candidate: Version) -> dict[str, Any]:
    """What the run's check step recorded (a run whose checks fail registers no version)."""
    with candidate.stores.metadata.read() as uow:
        steps = {s.name: s for s in uow.steps.for_run(candidate.record.run_id)}
    step = steps.get("check")
    if step is None:
        return {"status": "not recorded"}
    checks = step.details.get("checks") or {}
    failed = checks.get("failed") if isinstance(checks, dict) else None
    return {
        "status": step.status,
        "rows": step.details.get("rows"),
        "checks": checks,
        "failed": failed or [],
    }


def _fallback_by_segment(candidate: Version, rows: Any, fallback: np.ndarray) -> dict[str, float]:
    col = candidate.predictor.segment_column
    if col is None or col not in rows.columns or not len(fallback):
        return {}
    keys = rows[col].astype("string").fillna("<null>").to_numpy(dtype=object)
    out: dict[str, float] = {}
    for key in sorted(set(keys)):
        mask = keys == key
        out[str(key)] = round(float(fallback[mask].mean()), 6)
    return out


def _summary(values: np.ndarray) -> dict[str, float | None]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"min": None, "mean": None, "max": None}
    return {
        "min": float(finite.min()),
        "mean": float(finite.mean()),
        "max": float(finite.max()),
    }


def _num(x: float) -> float | str:
    """JSON has no infinity or NaN: say them as text."""
    return x if np.isfinite(x) else str(x)
