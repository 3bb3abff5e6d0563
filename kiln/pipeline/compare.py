"""Candidate against champion on the same rows, per segment: the relative change of a metric
with a paired bootstrap interval, and the verdict a gate draws from it. Pure maths, no I/O.

A segment of a dozen rows scores 20% worse or better by chance. The interval says how much of
a change is noise: the rows of the segment are resampled with replacement (the same rows for
both versions: *paired*), the relative change is computed on each resample, and its
percentiles bound the change. A segment *regressed* only when the whole interval lies beyond
the tolerance; an interval that straddles it is *inconclusive* (reported, not judged).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kiln.pipeline.metrics import HIGHER_IS_BETTER, score

__all__ = ["SegmentComparison", "Verdict", "compare_segments", "relative_change"]

Verdict = Literal["regressed", "inconclusive", "ok", "not judged"]

_CELLS = 2_000_000
"""Resampled cells (resamples x rows) drawn at once: bounds the memory of a large segment."""
SUBSAMPLE = 2_000
"""A larger segment is resampled ``SUBSAMPLE`` rows at a time (an m-out-of-n bootstrap), its
spread scaled by sqrt(SUBSAMPLE / rows): the interval of 100,000 rows costs what 2,000 do."""


@dataclass(frozen=True)
class SegmentComparison:
    rows: int
    candidate: float | None
    champion: float | None
    change: float | None
    """How much worse the candidate is, relative to the champion (negative: better)."""
    interval: tuple[float, float] | None
    """The bootstrap interval of ``change`` (None: not resampled)."""
    verdict: Verdict


def relative_change(cand: float | None, champ: float | None, *, higher: bool) -> float | None:
    """How much worse the candidate is, relative to the champion (negative: better)."""
    if cand is None or champ is None:
        return None
    worse_by = (champ - cand) if higher else (cand - champ)
    return worse_by / max(abs(champ), 1e-12)


def compare_segments(
    metric: str,
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    groups: Mapping[str, np.ndarray],
    *,
    tolerance: float,
    min_rows: int,
    confidence: float,
    resamples: int,
    seed: int = 0,
) -> dict[str, SegmentComparison]:
    """Per group (its row positions): both versions' ``metric``, the relative change, its
    paired bootstrap interval at ``confidence``, and the verdict against ``tolerance``.

    A group with fewer than ``min_rows`` rows, or whose metric is undefined, is ``not
    judged``. Resamples are drawn from a generator seeded by ``seed`` and the group's name,
    so a group's interval does not depend on the other groups.
    """
    higher = HIGHER_IS_BETTER[metric]
    y, candidate, champion = (np.asarray(a, dtype=np.float64) for a in (y, candidate, champion))
    fn = _BATCHED.get(metric)
    if candidate.ndim == 2:  # multiclass probabilities: a metric that is a mean of row terms
        per_row = _PER_ROW.get(metric)
        fn = None if per_row is None else _mean
        if per_row is not None:
            y, candidate, champion = np.zeros(len(y)), per_row(y, candidate), per_row(y, champion)
    out: dict[str, SegmentComparison] = {}
    for name, idx in groups.items():
        yi, ci, pi = y[idx], candidate[idx], champion[idx]
        c, p = _point(metric, fn, yi, ci), _point(metric, fn, yi, pi)
        change = relative_change(c, p, higher=higher)
        if change is None or len(yi) < min_rows:
            out[name] = SegmentComparison(len(yi), c, p, change, None, "not judged")
            continue
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        m = min(len(yi), SUBSAMPLE)
        draws = _bootstrap(
            fn or _looped(metric), yi, ci, pi, resamples=resamples, size=m, rng=rng, higher=higher
        )
        draws = draws[np.isfinite(draws)]
        if draws.size < resamples // 2:  # the metric is undefined on most resamples
            out[name] = SegmentComparison(len(yi), c, p, change, None, "not judged")
            continue
        alpha = (1.0 - confidence) / 2.0
        q = np.quantile(draws, [alpha, 1.0 - alpha])
        if m < len(yi):
            q = change + (q - change) * np.sqrt(m / len(yi))
        lo, hi = float(q[0]), float(q[1])
        verdict: Verdict = "regressed" if lo > tolerance else "inconclusive"
        if hi <= tolerance:
            verdict = "ok"
        out[name] = SegmentComparison(len(yi), c, p, change, (lo, hi), verdict)
    return out


def _point(
    metric: str,
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    y: np.ndarray,
    p: np.ndarray,
) -> float | None:
    """``score`` of one metric, by the batched function when there is one (the same value;
    scikit-learn's ``roc_auc_score`` costs milliseconds a call, segments are many)."""
    if fn is None or not len(y):
        return score([metric], y, p)[metric]
    value = float(fn(y[None, :], p[None, :])[0])
    return value if np.isfinite(value) else None


def _bootstrap(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    y: np.ndarray,
    cand: np.ndarray,
    champ: np.ndarray,
    *,
    resamples: int,
    size: int,
    rng: np.random.Generator,
    higher: bool,
) -> np.ndarray:
    """The relative change on each of ``resamples`` paired resamples of ``size`` rows (NaN
    where undefined)."""
    n = len(y)
    per_chunk = max(1, _CELLS // size)
    parts: list[np.ndarray] = []
    for start in range(0, resamples, per_chunk):
        b = min(per_chunk, resamples - start)
        idx = rng.integers(0, n, size=(b, size))
        yb = y[idx]
        c, p = fn(yb, cand[idx]), fn(yb, champ[idx])
        worse_by = (p - c) if higher else (c - p)
        with np.errstate(invalid="ignore", divide="ignore"):
            parts.append(worse_by / np.maximum(np.abs(p), 1e-12))
    return np.concatenate(parts)


# -- metrics over a batch of resamples (one per row of a 2-D array) ---------------------------


def _mae(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.abs(y - p).mean(axis=1)


def _rmse(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.sqrt(((y - p) ** 2).mean(axis=1))


def _r2(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    total = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - ((y - p) ** 2).sum(axis=1) / total
    return np.where(total > 0, r2, np.nan)


def _logloss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-15, 1 - 1e-15)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q)).mean(axis=1)


def _accuracy(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return ((p >= 0.5) == (y == 1)).mean(axis=1)


def _auc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The Mann-Whitney form of ROC AUC (ties count half), NaN where a resample has one
    class."""
    ranks = _average_ranks(p)
    positive = y == 1
    n1 = positive.sum(axis=1)
    n0 = y.shape[1] - n1
    u = (ranks * positive).sum(axis=1) - n1 * (n1 + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = u / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def _average_ranks(p: np.ndarray) -> np.ndarray:
    """Each row's 1-based ranks, ties averaged (``scipy.stats.rankdata`` per row), in one sort:
    the values are mapped into [0, 0.5] (order and ties kept) and row ``i`` shifted by ``2 i``,
    so sorting the whole array sorts each row in its own block."""
    b, n = p.shape
    lo, hi = float(p.min()), float(p.max())
    scaled = (p - lo) / (hi - lo) * 0.5 if hi > lo else np.zeros_like(p)
    flat = (scaled + 2.0 * np.arange(b)[:, None]).ravel()
    order = np.argsort(flat)
    ordered = flat[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], ordered.size] - 1
    ranks = np.empty(ordered.size)
    ranks[order] = (first[group] + last[group]) / 2.0 + 1.0
    return (ranks - (np.arange(b) * n).repeat(n)).reshape(b, n)


def _mean(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The mean of per-row terms (``_PER_ROW``): the metric itself, in one batched call."""
    return p.mean(axis=1)


def _row_logloss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    picked = p[np.arange(len(y)), y.astype(np.intp)]
    return -np.log(np.clip(picked, 1e-15, 1.0))


def _row_correct(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (np.argmax(p, axis=1) == y).astype(np.float64)


_PER_ROW: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "logloss": _row_logloss, "accuracy": _row_correct,
}  # fmt: skip
"""Multiclass metrics that are the mean of one term per row (class indices, probabilities):
bootstrapped as means of those terms. The others (f1_macro, auc) are scored per resample."""


def _looped(metric: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Any other metric of ``score``, one resample at a time."""

    def fn(y: np.ndarray, p: np.ndarray) -> np.ndarray:
        values = [score([metric], y[i], p[i])[metric] for i in range(y.shape[0])]
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    return fn


_BATCHED: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mae": _mae, "rmse": _rmse, "r2": _r2, "logloss": _logloss, "accuracy": _accuracy,
    "auc": _auc,
}  # fmt: skip
