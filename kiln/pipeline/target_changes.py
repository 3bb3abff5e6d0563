"""Did the target of the same rows change between two versions' data? Pure; no I/O.

A retrain on more data sees the rows its champion saw, plus new ones. An honest retrain leaves
the target of those shared rows as it was (up to a few late corrections); a target scaled,
converted to other units or re-labelled on some rows changes it. Its answers may move too little
for a replay to see, and the champion scores worse on the changed holdout, so nothing else
catches it. Rows are matched by a hash of every column the two snapshots share except the
target; rows whose key is not unique in either snapshot are left out (they cannot be matched).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["TargetChanges", "changed_targets"]

_EXAMPLES = 5


@dataclass(frozen=True)
class TargetChanges:
    matched: int
    """Rows found in both snapshots (by every shared column but the target)."""
    changed: int
    columns: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def share(self) -> float | None:
        return self.changed / self.matched if self.matched else None

    def as_evidence(self) -> dict[str, Any]:
        return {
            "matched_rows": self.matched,
            "changed_rows": self.changed,
            "changed_share": None if self.share is None else round(self.share, 6),
            "matched_on": self.columns,
            "examples": self.examples,
        }


def changed_targets(before: pd.DataFrame, after: pd.DataFrame, target: str) -> TargetChanges:
    """The rows of ``after`` also in ``before`` (same values in every other shared column) and
    how many of them carry another target value."""
    columns = sorted((set(before.columns) & set(after.columns)) - {target})
    if not columns or target not in before.columns or target not in after.columns:
        return TargetChanges(0, 0, columns)
    old = _keyed(before, columns, [target, *columns])
    new = _keyed(after, columns, [target])
    both = old.merge(
        new, how="inner", left_index=True, right_index=True, suffixes=("_before", "_after")
    )
    if both.empty:
        return TargetChanges(0, 0, columns)
    a, b = both[f"{target}_before"], both[f"{target}_after"]
    if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
        x, y = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
        same = np.isclose(x, y, rtol=1e-9, atol=1e-9) | (np.isnan(x) & np.isnan(y))
    else:
        same = (a.astype("string") == b.astype("string")).fillna(a.isna() & b.isna()).to_numpy()
    moved = both.loc[~same]
    examples = [
        {"row": {c: _plain(row[c]) for c in columns[:6]}, "before": _plain(row[f"{target}_before"]),
         "after": _plain(row[f"{target}_after"])}
        for _, row in moved.head(_EXAMPLES).iterrows()
    ]  # fmt: skip
    return TargetChanges(len(both), int((~same).sum()), columns, examples)


def _keyed(df: pd.DataFrame, columns: list[str], keep: list[str]) -> pd.DataFrame:
    """The ``keep`` columns of the rows indexed by a hash of ``columns`` (numbers as float64, so
    an int column and its float copy match), keeping only keys that occur once."""
    parts = df[columns].copy()
    for c in columns:
        if pd.api.types.is_numeric_dtype(parts[c]) and not pd.api.types.is_bool_dtype(parts[c]):
            parts[c] = parts[c].astype("float64")
    key = pd.util.hash_pandas_object(parts, index=False).to_numpy()
    out = df[keep].set_axis(pd.Index(key, name="row"), axis=0)
    return out.loc[~out.index.duplicated(keep=False)]


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value if isinstance(value, str | int | float | bool) else str(value)
