"""Data side of a run: split by time, build matrices, profile the training rows (the snapshot
of the extracted rows is written and read by :mod:`kiln.stores.snapshots`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kiln.config.loader import LoadedConfig
from kiln.config.models import PipelineConfig
from kiln.errors import SchemaError
from kiln.pipeline.features import FeatureSchema
from kiln.pipeline.metrics import MULTICLASS_METRICS
from kiln.pipeline.split import Split, holdout_mask, resolve_split

__all__ = [
    "MAX_CLASSES",
    "Prepared",
    "encode_labels",
    "prepare",
    "reference_profile",
    "run_metrics",
    "target_labels",
]

_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
MAX_CLASSES = 200
"""More distinct labels than this is taken for a mistake (a number or an id as the target)."""


def where_field(loaded: LoadedConfig) -> Any:
    def where(field: str) -> str:
        return f"{loaded.where(*field.split('.'))}: {field}"

    return where


@dataclass(frozen=True)
class Prepared:
    """The run's data as the train tasks need it."""

    schema: FeatureSchema
    X: np.ndarray
    y: np.ndarray
    segments: np.ndarray
    holdout: np.ndarray
    split: Split
    dropped_null_target: int
    frame: pd.DataFrame
    """The used rows (target not null) and columns, aligned with X, y and holdout."""
    classes: list[str] | None = None
    """The labels of a classification target that is not 0/1 (sorted; ``y`` holds their
    indices). None for regression and for a 0/1 or true/false target."""

    @property
    def multiclass(self) -> bool:
        return self.classes is not None and len(self.classes) > 2

    def rows(self) -> dict[str, int]:
        n_hold = int(self.holdout.sum())
        return {
            "total": len(self.y) + self.dropped_null_target,
            "used": len(self.y),
            "train": len(self.y) - n_hold,
            "holdout": n_hold,
            "dropped_null_target": self.dropped_null_target,
        }


def prepare(df: pd.DataFrame, loaded: LoadedConfig) -> Prepared:
    cfg = loaded.config
    target = cfg.target.column
    seg_col = cfg.segments.column if cfg.segments else None
    split_cols = [c for c in (cfg.data.time_column, cfg.evaluation.split.key) if c]
    needed = [*cfg.features, target, *split_cols, *([seg_col] if seg_col else [])]
    df = df[list(dict.fromkeys(needed))]  # copy only the columns the models need
    keep = df[target].notna().to_numpy()
    dropped = int((~keep).sum())
    if dropped:
        df = df.loc[keep].reset_index(drop=True)
    y, classes = _target(df[target], cfg.target.task, where_field(loaded)("target"))
    split = resolve_split(df, cfg)
    hold = holdout_mask(df, split)
    _check_split(hold, split, loaded)
    schema = FeatureSchema.infer(
        df, cfg.features, rows=~hold, where=where_field(loaded)("features")
    )
    if seg_col is not None:
        segs = df[seg_col].astype("string").to_numpy(dtype=object)
    else:
        segs = np.full(len(df), None, dtype=object)
    return Prepared(
        schema=schema,
        X=schema.encode(df),
        y=y,
        segments=segs,
        holdout=hold,
        split=split,
        dropped_null_target=dropped,
        frame=df,
        classes=classes,
    )


def _target(s: pd.Series, task: str, where: str) -> tuple[np.ndarray, list[str] | None]:
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            raise SchemaError(
                f"{where}: target {s.name!r} has dtype {s.dtype}; regression needs numbers",
                hint="use task: classification for labels, or cast the column in data.query",
            )
        return s.to_numpy(dtype=np.float64), None
    if pd.api.types.is_bool_dtype(s):
        return s.astype("float64").to_numpy(dtype=np.float64), None
    values = set(pd.unique(s))
    if values <= {0, 1} and not any(isinstance(v, str) for v in values):  # 0/1, true/false
        return s.astype("float64").to_numpy(dtype=np.float64), None
    numeric = pd.api.types.is_numeric_dtype(s)
    labels = target_labels(s)
    classes = _sorted_labels(pd.unique(labels), numeric=numeric)
    if len(classes) < 2:
        raise SchemaError(
            f"{where}: classification target {s.name!r} has one label ({classes[0]!r}) in every"
            " row with a target",
            hint="a classifier needs at least two labels: widen data.query's time range",
        )
    if len(classes) > MAX_CLASSES:
        raise SchemaError(
            f"{where}: classification target {s.name!r} has {len(classes):,} distinct labels"
            f" (at most {MAX_CLASSES}), e.g. {classes[:5]}",
            hint="is it a number or an id? use task: regression, or group the labels in"
            " data.query (CASE WHEN ... THEN 'low' ... END)",
        )
    return encode_labels(labels, classes), classes


def target_labels(s: pd.Series) -> np.ndarray:
    """Each label of a classification target as its text: integral numbers without a decimal
    point (3, not 3.0), as the ``classes`` of a version name them."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        v = s.to_numpy(dtype=np.float64)
        if np.all(v == np.round(v)):
            return np.array([str(int(x)) for x in v], dtype=object)
        return np.array([str(x) for x in v], dtype=object)
    return s.astype(str).to_numpy(dtype=object)


def _sorted_labels(labels: np.ndarray, *, numeric: bool) -> list[str]:
    if numeric:
        return sorted((str(x) for x in labels), key=float)
    return sorted(str(x) for x in labels)


def encode_labels(labels: Any, classes: list[str]) -> np.ndarray:
    """The index of each label in ``classes`` (float64, as ``Prepared.y``); -1 where a label is
    not one of them."""
    index = pd.Index(classes)
    return index.get_indexer(pd.Index(labels).astype(str)).astype(np.float64)


def run_metrics(cfg: PipelineConfig, classes: list[str] | None) -> tuple[list[str], str]:
    """The metrics of a run and its primary one: the configured ones, or for a target with more
    than two classes (unless ``evaluation.metrics`` is set) logloss, accuracy and f1_macro."""
    if classes is None or len(classes) <= 2 or cfg.evaluation.metrics:
        return cfg.metrics, cfg.primary_metric
    names = list(MULTICLASS_METRICS)
    primary = cfg.evaluation.primary or names[0]
    if primary not in names:
        names.append(primary)
    return names, primary


def _check_split(hold: np.ndarray, split: Split, loaded: LoadedConfig) -> None:
    n_hold = int(hold.sum())
    if n_hold == 0 or n_hold == len(hold):
        side = "no rows" if n_hold == 0 else "every row"
        hint = {
            "time": "move holdout_start inside the data's time range, or use holdout_fraction",
            "random": "raise holdout_fraction, or extract more rows",
            "hash": f"raise holdout_fraction, or hash a key with more distinct values than "
            f"{split.key!r}",
        }[split.kind]
        raise SchemaError(
            f"{loaded.where('evaluation', 'split')}: evaluation.split ({split.describe()}) puts "
            f"{side} of {len(hold)} in the holdout",
            hint=hint,
        )


def reference_profile(prep: Prepared, target: str, *, refit: bool = False) -> dict[str, Any]:
    """Summary of the training rows that the monitor compares live traffic with (with
    ``refit``, every row: the served models were refit on them all)."""
    train = np.ones(len(prep.holdout), dtype=bool) if refit else ~prep.holdout
    profile: dict[str, Any] = {}
    for spec in prep.schema.features:
        s = prep.frame[spec.name][train]
        entry: dict[str, Any] = {"kind": spec.kind, "null_share": float(s.isna().mean())}
        if spec.kind == "numeric":
            v = pd.to_numeric(s, errors="coerce").dropna().astype("float64")
            if len(v):
                entry |= {
                    "mean": float(v.mean()),
                    "std": float(v.std(ddof=0)),
                    "min": float(v.min()),
                    "max": float(v.max()),
                    "quantiles": dict(
                        zip(map(str, _QUANTILES), v.quantile(_QUANTILES).tolist(), strict=True)
                    ),
                }
        else:
            freq = s.astype("string").value_counts(normalize=True, dropna=True).head(50)
            entry["top"] = {str(k): float(p) for k, p in freq.items()}
        profile[spec.name] = entry
    t = pd.Series(prep.y[train])
    profile["__target__"] = {"mean": float(t.mean()), "std": float(t.std(ddof=0))}
    if prep.multiclass and prep.classes is not None:
        shares = t.value_counts(normalize=True)
        profile["__target__"]["classes"] = {
            c: float(shares.get(float(i), 0.0)) for i, c in enumerate(prep.classes)
        }
    return profile
