"""The feature schema of a model version, and encoding rows into the float matrix models see.

Numeric features become float64 (nulls -> NaN). Text features are categorical: each value maps to
its index in the training categories; a value never seen in training (*unseen*) becomes NaN,
which LightGBM and scikit-learn's histogram models treat as missing, and is reported by
``encode_rows_unseen`` / ``unseen_in_frame`` so that the version's policy can act on it.
Training and serving share this code, so a row is encoded the same way in both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from kiln.errors import SchemaError

__all__ = ["FeatureSchema", "FeatureSpec"]


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: Literal["numeric", "categorical"]
    dtype: str
    categories: tuple[str, ...] = ()
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({c: i for i, c in enumerate(self.categories)})

    @property
    def lookup(self) -> pd.Index:
        return pd.Index(self.categories, dtype="string")

    def index_of(self, value: Any) -> int | None:
        """The category's position, or None for a value never seen in training."""
        return self._index.get(value if isinstance(value, str) else str(value))

    def code(self, value: Any) -> float:
        if value is None:
            return np.nan
        i = self.index_of(value)
        return np.nan if i is None else float(i)


@dataclass(frozen=True)
class FeatureSchema:
    features: tuple[FeatureSpec, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.features) if f.kind == "categorical"]

    @classmethod
    def infer(
        cls,
        df: pd.DataFrame,
        names: Sequence[str],
        *,
        rows: np.ndarray | None = None,
        where: str = "features",
    ) -> FeatureSchema:
        """Kinds and categories from the training rows (``rows``: a boolean mask of them)."""
        specs = []
        for name in names:
            s = df[name]
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                specs.append(FeatureSpec(name, "numeric", str(s.dtype)))
            elif pd.api.types.is_string_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
                seen = s if rows is None else s[rows]
                cats = sorted({str(v) for v in seen.dropna().unique()})
                specs.append(FeatureSpec(name, "categorical", "string", tuple(cats)))
            else:
                raise SchemaError(
                    f"{where}: feature {name!r} has dtype {s.dtype}, which a model cannot use",
                    hint="derive a number or a text category from it in data.query "
                    "(e.g. EXTRACT(hour FROM ts) AS hour)",
                )
        return cls(tuple(specs))

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """Encode a DataFrame (training, batch replay) into a C-contiguous float64 matrix."""
        out = np.empty((len(df), len(self.features)), dtype=np.float64)
        for j, spec in enumerate(self.features):
            col = df[spec.name]
            if spec.kind == "numeric":
                if not pd.api.types.is_numeric_dtype(col):
                    col = pd.to_numeric(col, errors="coerce")
                out[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                codes = spec.lookup.get_indexer(pd.Index(col.astype("string")))
                out[:, j] = np.where(codes < 0, np.nan, codes)
        return out

    def encode_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode a few JSON-like rows (the serving path) without going through pandas."""
        return self.encode_rows_unseen(rows)[0]

    def encode_rows_unseen(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, list[tuple[str, ...]] | None]:
        """``encode_rows``, and per row the categorical features whose value training never
        saw (None when no row has any)."""
        out = np.empty((len(rows), len(self.features)), dtype=np.float64)
        unseen: list[tuple[str, ...]] | None = None
        for i, row in enumerate(rows):
            for j, spec in enumerate(self.features):
                v = row.get(spec.name)
                if spec.kind == "categorical":
                    k = None if v is None else spec.index_of(v)
                    out[i, j] = np.nan if k is None else k
                    if k is None and v is not None:
                        if unseen is None:
                            unseen = [()] * len(rows)
                        unseen[i] = (*unseen[i], spec.name)
                else:
                    out[i, j] = np.nan if v is None else float(v)
        return out, unseen

    def unseen_in_frame(self, df: pd.DataFrame) -> list[tuple[str, ...]] | None:
        """Per row of ``df``, the categorical features whose value training never saw (None
        when no row has any)."""
        unseen: list[tuple[str, ...]] | None = None
        for spec in self.features:
            if spec.kind != "categorical" or spec.name not in df.columns:
                continue
            col = df[spec.name].astype("string")
            new = col.notna().to_numpy() & (spec.lookup.get_indexer(pd.Index(col)) < 0)
            for i in np.flatnonzero(new):
                if unseen is None:
                    unseen = [()] * len(df)
                unseen[i] = (*unseen[i], spec.name)
        return unseen

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {"name": f.name, "kind": f.kind, "dtype": f.dtype}
            | ({"categories": list(f.categories)} if f.kind == "categorical" else {})
            for f in self.features
        ]

    @classmethod
    def from_dict(cls, items: Sequence[Mapping[str, Any]]) -> FeatureSchema:
        return cls(
            tuple(
                FeatureSpec(i["name"], i["kind"], i["dtype"], tuple(i.get("categories", ())))
                for i in items
            )
        )
