"""Evaluation metrics as pure functions of (truth, prediction)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "HIGHER_IS_BETTER",
    "MIN_JUDGED_ROWS",
    "MULTICLASS_METRICS",
    "Comparison",
    "compare_to_fallback",
    "score",
]

HIGHER_IS_BETTER = {"r2": True, "auc": True, "accuracy": True, "mae": False, "rmse": False,
                    "logloss": False, "f1_macro": True}  # fmt: skip
MULTICLASS_METRICS = ("logloss", "accuracy", "f1_macro")
"""The default metrics of a classification target with more than two classes (primary first)."""


def _mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(y - p)))


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - p) ** 2)))


def _r2(y: np.ndarray, p: np.ndarray) -> float | None:
    if len(y) < 2 or np.var(y) == 0:
        return None
    return float(1.0 - np.sum((y - p) ** 2) / np.sum((y - np.mean(y)) ** 2))


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score  # scikit-learn costs a second to import

    if p.ndim == 2:  # one-vs-rest, macro average: defined when every class is in the truth
        k = p.shape[1]
        if len(np.unique(y)) != k:
            return None
        return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=range(k)))
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    if p.ndim == 2:
        picked = p[np.arange(len(y)), y.astype(np.intp)]
        return float(-np.mean(np.log(np.clip(picked, 1e-15, 1.0))))
    q = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _labels(p: np.ndarray) -> np.ndarray:
    """The predicted class index: the most probable class, or p >= 0.5 for a binary model."""
    return np.argmax(p, axis=1) if p.ndim == 2 else (p >= 0.5).astype(np.intp)


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(_labels(p) == y))


def _f1_macro(y: np.ndarray, p: np.ndarray) -> float:
    """The unweighted mean of the per-class F1 over the classes in the truth or the predictions
    (what ``sklearn.metrics.f1_score(average="macro")`` computes)."""
    truth = y.astype(np.intp)
    pred = _labels(p)
    scores = []
    for c in np.union1d(truth, pred):
        tp = np.sum((truth == c) & (pred == c))
        wrong = np.sum((truth == c) != (pred == c))  # false positives + false negatives
        scores.append(2.0 * tp / (2.0 * tp + wrong))
    return float(np.mean(scores))


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float | None]] = {
    "mae": _mae, "rmse": _rmse, "r2": _r2, "auc": _auc, "logloss": _logloss,
    "accuracy": _accuracy, "f1_macro": _f1_macro,
}  # fmt: skip


def score(names: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """Each named metric, or None where it is undefined (no rows, one class, constant truth).

    For a binary classifier ``y_pred`` is the probability of the positive class; for a multiclass
    one it is the (rows, classes) matrix of probabilities and ``y_true`` the class indices.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if len(y) == 0:
        return dict.fromkeys(names)
    return {name: _METRICS[name](y, p) for name in names}


MIN_JUDGED_ROWS = 5
"""A segment with fewer holdout rows is not compared with the fallback: too few to tell."""


@dataclass(frozen=True)
class Comparison:
    """A segment model against the fallback, on the segment's own holdout rows."""

    verdict: Literal["worse", "not_worse", "not_judged"]
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"verdict": self.verdict, "reason": self.reason}


def compare_to_fallback(
    metric: str,
    own: float | None,
    fallback: float | None,
    rows: int,
    *,
    min_rows: int = MIN_JUDGED_ROWS,
) -> Comparison:
    """Whether the segment's own model scores strictly worse than the fallback on ``metric``
    (its direction from :data:`HIGHER_IS_BETTER`); a tie is not worse."""
    if rows < min_rows:
        return Comparison("not_judged", f"not judged: {rows} holdout rows < {min_rows}")
    if own is None or fallback is None:
        return Comparison("not_judged", f"not judged: {metric} is undefined on its holdout")
    worse = own < fallback if HIGHER_IS_BETTER[metric] else own > fallback
    if worse:
        return Comparison(
            "worse",
            f"worse than the fallback on its holdout ({metric} {own:.4g} vs {fallback:.4g})",
        )
    return Comparison("not_worse", f"{metric} {own:.4g} vs fallback {fallback:.4g}")
