"""The training reference of a version: what the monitor compares live traffic with.

Written into the manifest under ``"reference"``, per segment and overall (``"__all__"``)::

    {"format": 1, "bins": 10, "top_categories": 20,
     "segments": {"__all__" | "<segment>": {
        "rows": <training rows>,
        "features": {"<name>": {"kind": "numeric", "edges", "counts", "nulls", "min", "max"}
                             | {"kind": "categorical", "categories", "counts" (+ other), "nulls"}},
        "prediction": {"edges", "counts", "min", "max"},
        "metric": {"name", "value", "rows"}}}}

The features part is computed from the encoded training matrix on the run's background thread
while the segments train (:func:`training_profiles`); the prediction and metric part, from the
holdout predictions of what serves each segment, when the manifest is built
(:func:`with_predictions`). A segment's numeric edges come from its own rows, so that drift
inside a small airport is seen rather than drowned in the overall distribution. The training
rows are those the served models were fit on: every row with ``evaluation.refit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from kiln.config.models import PipelineConfig
from kiln.pipeline.features import FeatureSpec
from kiln.pipeline.histograms import (
    bin_counts,
    category_counts,
    numeric_histograms,
    quantile_edges,
)
from kiln.pipeline.metrics import score
from kiln.runs.data import Prepared, reference_profile

__all__ = [
    "ALL",
    "BINS",
    "REFERENCE_FORMAT",
    "TOP_CATEGORIES",
    "TrainingProfiles",
    "feature_reference",
    "training_profiles",
    "with_predictions",
]

REFERENCE_FORMAT: Final = 1
BINS: Final = 10
TOP_CATEGORIES: Final = 20
ALL: Final = "__all__"
"""The key of the whole training set among the segments (never a segment value)."""


@dataclass(frozen=True)
class TrainingProfiles:
    """What the background thread of a run computes from the training rows."""

    profile: dict[str, Any]
    """:func:`kiln.runs.data.reference_profile` (the gates read its target spread)."""
    features: dict[str, dict[str, Any]]
    """Per segment key: ``{"rows", "features"}`` of the reference."""


def training_profiles(prep: Prepared, cfg: PipelineConfig) -> TrainingProfiles:
    refit = cfg.evaluation.refit
    return TrainingProfiles(
        profile=reference_profile(prep, cfg.target.column, refit=refit),
        features=feature_reference(prep, refit=refit, segmented=cfg.segments is not None),
    )


def _groups(segments: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The row indices (into ``rows``' True positions) of each non-null segment value."""
    picked = pd.Series(segments[rows], dtype="string")
    groups = picked.groupby(picked, sort=True).indices
    return {str(k): np.asarray(v, dtype=np.intp) for k, v in groups.items()}


def _columns(X: np.ndarray, rows: np.ndarray, columns: list[int]) -> np.ndarray:
    """``X[rows][:, columns]`` in Fortran order: each column contiguous, to sort and count."""
    if not columns:
        return np.empty((len(rows), 0))
    return np.stack([X[:, j].take(rows) for j in columns]).T


def feature_reference(
    prep: Prepared,
    *,
    refit: bool,
    segmented: bool,
    bins: int = BINS,
    top_categories: int = TOP_CATEGORIES,
) -> dict[str, dict[str, Any]]:
    """Histograms of every feature over the training rows, overall and per segment.

    The rows are gathered once, grouped by segment, so that each segment is a slice of one
    column-major block (a few numpy calls per segment and feature, whatever the row count)."""
    rows = np.flatnonzero(np.ones(len(prep.y), dtype=bool) if refit else ~prep.holdout)
    parts = {ALL: slice(0, len(rows))}
    if segmented:
        codes, names = pd.factorize(pd.Series(prep.segments[rows], dtype="string"), sort=True)
        order = np.argsort(codes, kind="stable")  # rows of a null segment (-1) first
        rows = rows[order]
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        parts |= {str(n): slice(bounds[i], bounds[i + 1]) for i, n in enumerate(names)}
    specs = prep.schema.features
    numeric = [j for j, f in enumerate(specs) if f.kind == "numeric"]
    text = [j for j, f in enumerate(specs) if f.kind == "categorical"]
    block = _Training(
        specs=specs,
        numeric=numeric,
        text=text,
        values=_columns(prep.X, rows, numeric),
        codes=_columns(prep.X, rows, text),
        # X holds NaN for a null and for a category first seen in the holdout (refit): apart.
        nulls=np.stack(
            [prep.frame[specs[j].name].isna().to_numpy().take(rows) for j in text]
            or [np.empty(len(rows), dtype=bool)]
        ).T,
        bins=bins,
        top=top_categories,
    )
    return {key: block.histograms(part) for key, part in parts.items()}


@dataclass(frozen=True)
class _Training:
    specs: tuple[FeatureSpec, ...]
    numeric: list[int]
    text: list[int]
    values: np.ndarray
    """The numeric features of the training rows (column-major)."""
    codes: np.ndarray
    """The categorical features' codes of the same rows (column-major)."""
    nulls: np.ndarray
    """Whether each categorical value is null, for the same rows."""
    bins: int
    top: int

    def histograms(self, part: slice) -> dict[str, Any]:
        """The ``{"rows", "features"}`` of the training rows ``part``."""
        specs = self.specs
        features: dict[str, Any] = {}
        hists = numeric_histograms(self.values[part], self.bins)
        for j, hist in zip(self.numeric, hists, strict=True):
            features[specs[j].name] = {
                "kind": "numeric",
                "edges": hist.edges.tolist(),
                "counts": hist.counts.tolist(),
                "nulls": hist.nulls,
                "min": hist.min,
                "max": hist.max,
            }
        for k, j in enumerate(self.text):
            spec = specs[j]
            counted = category_counts(self.codes[part, k], len(spec.categories), self.top)
            null = int(self.nulls[part, k].sum())
            counts = counted.counts.copy()
            counts[-1] += counted.nulls - null  # values outside the categories are "other"
            features[spec.name] = {
                "kind": "categorical",
                "categories": [spec.categories[c] for c in counted.codes],
                "counts": counts.tolist(),
                "nulls": null,
            }
        return {
            "rows": int(part.stop - part.start),
            "features": {f.name: features[f.name] for f in specs},
        }


def with_predictions(
    features: Mapping[str, dict[str, Any]],
    prep: Prepared,
    served: np.ndarray,
    *,
    primary: str,
    bins: int = BINS,
    top_categories: int = TOP_CATEGORIES,
) -> dict[str, Any]:
    """The whole reference: ``features`` (of :func:`feature_reference`) with, per segment, the
    holdout predictions of what serves it and their primary metric.

    ``served``: per row of ``prep``, the holdout prediction of the model serving the row's
    segment (its own model, or the fallback for a routed one); NaN off the holdout. A multiclass
    row holds every class's probability; its top one is what captures store as ``prediction``.
    """
    hold = prep.holdout
    rows = np.flatnonzero(hold)
    groups = {ALL: rows}
    if any(key != ALL for key in features):
        groups |= {k: rows[v] for k, v in _groups(prep.segments, hold).items()}
    segments: dict[str, Any] = {}
    for key, entry in features.items():
        idx = groups.get(key, np.empty(0, dtype=np.intp))
        pred, y = served[idx], prep.y[idx]
        top = pred.max(axis=1) if pred.ndim == 2 else pred
        known = ~np.isnan(top)
        edges = quantile_edges(top[known], bins)
        counts, _ = bin_counts(top[known], edges)
        value = score([primary], y[known], pred[known])[primary] if known.any() else None
        segments[key] = entry | {
            "prediction": {
                "edges": edges.tolist(),
                "counts": counts.tolist(),
                "min": float(top[known].min()) if known.any() else None,
                "max": float(top[known].max()) if known.any() else None,
            },
            "metric": {"name": primary, "value": value, "rows": int(known.sum())},
        }
    return {
        "format": REFERENCE_FORMAT,
        "bins": bins,
        "top_categories": top_categories,
        "segments": segments,
    }
