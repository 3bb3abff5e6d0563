"""Histograms of training data, the shape in which a version remembers what it was trained on.

A numeric feature is cut by *interior* edges taken from its training quantiles: ``len(edges) + 1``
bins, bin ``k`` holding ``edges[k-1] <= v < edges[k]`` (the first bin everything below
``edges[0]``, the last everything from ``edges[-1]`` up), so that any later value, however far out
of the training range, falls in a bin. Edges are unique and strictly above the training minimum,
and a value that holds a bin's share or more (``precip`` is 0 in ~95% of hours) gets a bin of its
own, closed by the next value seen (so rain against no rain is still seen), rather than empty
bins; a constant feature has no edge at all (one bin). A categorical feature keeps its ``top_k``
most frequent categories and an "other" bucket. Nulls are never in a bin: they are counted apart.

Pure functions over arrays, shared by the run (which writes the reference) and the monitor and
benchmarks (which read it): the same rule in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = [
    "CategoryCounts",
    "NumericHistogram",
    "bin_counts",
    "category_counts",
    "numeric_histograms",
    "quantile_edges",
]


@dataclass(frozen=True)
class NumericHistogram:
    edges: np.ndarray
    counts: np.ndarray
    """``len(edges) + 1`` counts of the non-null values."""
    nulls: int
    min: float | None
    max: float | None
    """The range of the non-null values (None when every value is null)."""


@dataclass(frozen=True)
class CategoryCounts:
    codes: np.ndarray
    """The kept categories' codes, most frequent first (ties: lower code first)."""
    counts: np.ndarray
    """One count per kept code, then the count of every other non-null value."""
    nulls: int


@cache
def _probabilities(bins: int) -> np.ndarray:
    if bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    return np.linspace(0.0, 1.0, bins + 1)[1:-1]


def _distinct(ordered: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array (``np.unique`` without its sort)."""
    if ordered.size == 0:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def _edges_of_sorted(ordered: np.ndarray, bins: int) -> np.ndarray:
    """Interior edges of non-null values sorted ascending (numpy's "linear" quantiles)."""
    n = len(ordered)
    if n == 0:
        return np.empty(0)
    pos = _probabilities(bins) * (n - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    q = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    values = _distinct(q)  # quantiles of sorted values ascend
    heavy = np.concatenate((q[1:][q[1:] == q[:-1]], q[:1][q[:1] == ordered[0]]))  # >= a bin
    after = np.searchsorted(ordered, heavy, side="right")  # its bin ends at the next value
    edges = _distinct(np.sort(np.concatenate((values, ordered[after[after < n]]))))
    return edges[edges > ordered[0]]


def quantile_edges(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """The interior bin edges of ``values`` (NaN = null, ignored): its ``bins``-quantiles,
    unique, ascending and above the minimum; none for a constant or all-null column."""
    v = np.asarray(values, dtype=np.float64)
    return _edges_of_sorted(np.sort(v[~np.isnan(v)]), bins)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """``(counts, nulls)``: how many non-null ``values`` fall in each of the ``len(edges) + 1``
    bins (``edges[k-1] <= v < edges[k]``), and how many are null (NaN)."""
    v = np.asarray(values, dtype=np.float64)
    null = np.isnan(v)
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), v[~null], side="right")
    return np.bincount(bins, minlength=len(edges) + 1), int(null.sum())


def numeric_histograms(block: np.ndarray, bins: int = 10) -> list[NumericHistogram]:
    """:func:`quantile_edges` and :func:`bin_counts` of every column of a 2-D float block (NaN =
    null), with one sort of the block: the training reference of many features and segments."""
    block = np.asarray(block, dtype=np.float64)
    if block.ndim != 2:
        raise ValueError(f"numeric_histograms takes a 2-D block, not {block.ndim}-D")
    ordered = np.sort(block, axis=0)  # NaN sorts last
    non_null = (~np.isnan(block)).sum(axis=0)
    out = []
    for j in range(block.shape[1]):
        n = int(non_null[j])
        col = ordered[:n, j]
        edges = _edges_of_sorted(col, bins)
        below = np.searchsorted(col, edges, side="left")  # values < each edge
        counts = np.diff(np.concatenate(([0], below, [n])))
        out.append(
            NumericHistogram(
                edges=edges,
                counts=counts.astype(np.int64),
                nulls=block.shape[0] - n,
                min=float(col[0]) if n else None,
                max=float(col[-1]) if n else None,
            )
        )
    return out


def category_counts(codes: np.ndarray, n_categories: int, top_k: int = 20) -> CategoryCounts:
    """Counts of encoded categories (``codes``: index into the feature's categories, NaN =
    null): the ``top_k`` most frequent present ones, then "other" for the rest."""
    c = np.asarray(codes, dtype=np.float64)
    null = np.isnan(c)
    present = c[~null].astype(np.intp)
    if present.size and (present.min() < 0 or present.max() >= n_categories):
        raise ValueError(f"category codes must lie in [0, {n_categories}), not {present.max()}")
    per_code = np.bincount(present, minlength=n_categories)
    order = np.argsort(-per_code, kind="stable")[:top_k]
    kept = order[per_code[order] > 0]
    counts = np.append(per_code[kept], int(present.size - per_code[kept].sum()))
    return CategoryCounts(codes=kept, counts=counts.astype(np.int64), nulls=int(null.sum()))
