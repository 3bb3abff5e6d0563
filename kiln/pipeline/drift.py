"""How far a current distribution is from the reference, both binned on the same bins.

Every statistic takes two count vectors over the same bins (the reference's, see
:mod:`kiln.pipeline.histograms`), or two stacks of them (one row per feature or segment, the
bins on the last axis), and returns a float per row. The monitor turns a value into "warn" or
"alert" with the thresholds of ``monitor:``; nothing here decides.

- ``psi``: population stability index, sum of ``(c - r) * ln(c / r)`` over the bins' shares.
  An empty bin's share is taken as :data:`PSI_EPSILON` (1e-4, as Evidently does), so a bin that
  fills up from nothing counts for much, not infinitely.
- ``jensen_shannon``: scipy's Jensen-Shannon *distance* (base 2: 0 same, 1 disjoint).
- ``wasserstein``: the earth mover's distance between the two histograms, each bin's mass at its
  representative (the middle of the bin, the outer bins closed by the training min and max),
  divided by the reference's standard deviation over the same representatives, so that one
  threshold fits a feature in degrees and one in miles (0 for a constant reference).
- ``ks``: the largest absolute difference of the two cumulative shares over the bins (the
  Kolmogorov-Smirnov statistic of the binned data).
A row where either side has no count is NaN: nothing to compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, get_args

import numpy as np
from scipy.spatial.distance import jensenshannon

__all__ = [
    "PSI_EPSILON",
    "STATISTICS",
    "StatisticName",
    "bin_representatives",
    "jensen_shannon",
    "ks",
    "psi",
    "statistic",
    "wasserstein",
]

StatisticName = Literal["psi", "jensen_shannon", "wasserstein", "ks"]
STATISTICS: Final = get_args(StatisticName)
PSI_EPSILON: Final = 1e-4
"""The share given to an empty bin in PSI (Evidently's choice), so that the log is finite."""


def _shares(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return c / total, total[..., 0] > 0


def _pair(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, r_ok = _shares(ref)
    c, c_ok = _shares(cur)
    if r.shape != c.shape:
        raise ValueError(f"reference bins {r.shape} and current bins {c.shape} differ")
    return r, c, r_ok & c_ok


def _finish(value: np.ndarray, ok: np.ndarray) -> np.ndarray | float:
    out = np.where(ok, value, np.nan)
    return float(out) if out.ndim == 0 else out


def psi(ref: np.ndarray, cur: np.ndarray) -> np.ndarray | float:
    r, c, ok = _pair(ref, cur)
    r = np.where(r > 0, r, PSI_EPSILON)
    c = np.where(c > 0, c, PSI_EPSILON)
    return _finish(((c - r) * np.log(c / r)).sum(axis=-1), ok)


def jensen_shannon(ref: np.ndarray, cur: np.ndarray) -> np.ndarray | float:
    r, c, ok = _pair(ref, cur)
    with np.errstate(invalid="ignore"):
        value = jensenshannon(np.nan_to_num(r), np.nan_to_num(c), base=2, axis=-1)
    return _finish(np.asarray(value), ok)


def ks(ref: np.ndarray, cur: np.ndarray) -> np.ndarray | float:
    r, c, ok = _pair(ref, cur)
    return _finish(np.abs(np.cumsum(r, axis=-1) - np.cumsum(c, axis=-1)).max(axis=-1), ok)


def bin_representatives(edges: Sequence[float], lo: float, hi: float) -> np.ndarray:
    """Where a bin's mass sits for :func:`wasserstein`: the middle of each bin, the first bin
    opened at the training minimum ``lo`` and the last closed at the maximum ``hi``."""
    bounds = np.concatenate(([lo], np.asarray(edges, dtype=np.float64), [hi]))
    return (bounds[:-1] + bounds[1:]) / 2


def wasserstein(ref: np.ndarray, cur: np.ndarray, at: np.ndarray) -> np.ndarray | float:
    """W1 between the two histograms with their mass at ``at`` (ascending, one per bin), over
    the reference's standard deviation at the same points.

    The same value as ``scipy.stats.wasserstein_distance(at, at, ref, cur)`` (the area between
    the two cumulative distributions) for each row, computed for a whole stack at once."""
    r, c, ok = _pair(ref, cur)
    x = np.broadcast_to(np.asarray(at, dtype=np.float64), r.shape)
    r0, c0 = np.nan_to_num(r), np.nan_to_num(c)
    gaps = np.diff(x, axis=-1)
    cdf = np.abs(np.cumsum(r0, axis=-1) - np.cumsum(c0, axis=-1))[..., :-1]
    distance = (cdf * gaps).sum(axis=-1)
    mean = (r0 * x).sum(axis=-1, keepdims=True)
    spread = np.sqrt((r0 * (x - mean) ** 2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(spread > 0, distance / spread, np.where(distance > 0, np.inf, 0.0))
    return _finish(value, ok)


def statistic(
    name: str, ref: np.ndarray, cur: np.ndarray, *, at: np.ndarray | None = None
) -> np.ndarray | float:
    """The drift statistic ``name`` (one of :data:`STATISTICS`) of ``cur`` against ``ref``;
    ``at``: the bins' representatives, which ``wasserstein`` needs (numeric features only)."""
    if name == "psi":
        return psi(ref, cur)
    if name == "jensen_shannon":
        return jensen_shannon(ref, cur)
    if name == "ks":
        return ks(ref, cur)
    if name == "wasserstein":
        if at is None:
            raise ValueError("wasserstein needs the bins' representatives (numeric features)")
        return wasserstein(ref, cur, at)
    raise ValueError(f"unknown drift statistic {name!r}: one of {', '.join(STATISTICS)}")
