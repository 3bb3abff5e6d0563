"""Evaluation metrics as pure functions of (truth, prediction)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["HIGHER_IS_BETTER", "score"]

HIGHER_IS_BETTER = {"r2": True, "auc": True, "accuracy": True, "mae": False, "rmse": False,
                    "logloss": False}  # fmt: skip


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

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p >= 0.5).astype(y.dtype) == y))


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float | None]] = {
    "mae": _mae, "rmse": _rmse, "r2": _r2, "auc": _auc, "logloss": _logloss,
    "accuracy": _accuracy,
}  # fmt: skip


def score(names: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """Each named metric, or None where it is undefined (no rows, one class, constant truth).

    For classification ``y_pred`` is the probability of the positive class.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if len(y) == 0:
        return dict.fromkeys(names)
    return {name: _METRICS[name](y, p) for name in names}
