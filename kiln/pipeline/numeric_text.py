"""Numbers stored as text: a text feature whose values are almost all numbers.

Such a column (a CSV with "n/a " or "?" cells, a VARCHAR column in a database) is trained on as
a category, one category per distinct number, which throws away the order of the numbers; the
fix is a cast in ``data.query``. Pure: the caller decides how to say it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

__all__ = ["NUMERIC_SHARE", "NumericText", "numeric_text"]

NUMERIC_SHARE = 0.95
"""A text feature is flagged when at least this share of its non-null values are numbers, or of
its distinct values when there are many (a marker such as "NA " may fill more than 5% of rows)."""
_MANY = 20
_SHOWN = 3


@dataclass(frozen=True)
class NumericText:
    column: str
    values: int
    """Non-null values looked at."""
    numbers: int
    """How many of them read as numbers."""
    others: tuple[tuple[str, int], ...]
    """The most frequent values that are not numbers, with their counts."""

    @property
    def share(self) -> float:
        return self.numbers / self.values

    def cast(self, *, duckdb: bool) -> str:
        """SQL for data.query that makes the column numeric (the other values become null)."""
        c = self.column
        if duckdb:
            return f"TRY_CAST({c} AS DOUBLE) AS {c}"
        if not self.others:
            return f"CAST({c} AS DOUBLE PRECISION) AS {c}"
        inner = f"TRIM({c})"
        for value, _ in self.others:
            inner = f"NULLIF({inner}, {_literal(value.strip())})"
        return f"CAST({inner} AS DOUBLE PRECISION) AS {c}"

    def message(self, *, duckdb: bool) -> str:
        if self.others:
            shown = ", ".join(f"{v!r} ({n})" for v, n in self.others)
            part = (
                f"{int(self.share * 100)}% of its {self.values:,} values are numbers "
                f"(the others: {shown})"
            )
        else:
            part = f"all of its {self.values:,} values are numbers"
        return (
            f"feature {self.column!r} is text but {part}, so it is trained on as categories; "
            f"cast it in data.query ({self.cast(duckdb=duckdb)}) or clean the source"
        )


def numeric_text(df: pd.DataFrame, columns: Sequence[str]) -> list[NumericText]:
    """The text ``columns`` of ``df`` whose non-null values are at least 95% numbers, or whose
    distinct values are (when 20 or more of them are numbers)."""
    found = []
    for name in columns:
        s = df[name]
        if not (pd.api.types.is_string_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype)):
            continue
        counts = s.dropna().astype(str).value_counts()
        if counts.empty:
            continue
        parsed = pd.to_numeric(pd.Series(counts.index.str.strip()), errors="coerce")
        is_number = parsed.notna().to_numpy()
        total, numbers = int(counts.sum()), int(counts[is_number].sum())
        distinct = int(is_number.sum())
        if numbers / total >= NUMERIC_SHARE or (
            distinct >= _MANY and distinct / len(counts) >= NUMERIC_SHARE
        ):
            others = counts[~is_number].head(_SHOWN)
            found.append(
                NumericText(
                    name, total, numbers, tuple((str(v), int(n)) for v, n in others.items())
                )
            )
    return found


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
