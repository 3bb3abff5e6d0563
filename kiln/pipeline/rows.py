"""What a row to predict may hold: the one rule that the server and batch scoring both apply.

A row holds every feature of the version, and its segment column even when that is not a
feature. A numeric feature takes a finite number or null (a boolean feature also takes true or
false); a categorical feature takes a text or null; a segment column that is not a feature takes
a text, an integer or null. The server builds its request schema from :func:`row_rules`
(``kiln.serving._schema``); batch scoring checks a whole DataFrame with :func:`check_frame`,
column by column. Both word their problems with :data:`EXPECTED`.

A text (a categorical feature, a segment column) holds at most ``max_length`` characters: the
version's ``serving.max_text_length`` (:func:`text_limit`, default :data:`MAX_TEXT_LENGTH`), or
the longest category seen in training when that is longer.

A categorical value that training never saw is *unseen*: what to do with it is the version's
``unseen_categories`` policy (``accept``, ``fallback`` or ``reject``, see
:data:`UNSEEN_POLICIES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import numpy as np
import pandas as pd

from kiln.config.models import UnseenCategories
from kiln.pipeline.features import FeatureSchema, FeatureSpec

__all__ = [
    "EXPECTED",
    "MAX_TEXT_LENGTH",
    "UNSEEN_POLICIES",
    "BadCell",
    "ColumnRule",
    "FrameCheck",
    "UnseenPolicy",
    "check_frame",
    "known_categories",
    "row_rules",
    "text_limit",
    "too_long",
    "unseen_policy",
]

ColumnKind = Literal["number", "flag", "text", "segment"]
UnseenPolicy = UnseenCategories
UNSEEN_POLICIES: Final[tuple[UnseenPolicy, ...]] = get_args(UnseenCategories)
MAX_TEXT_LENGTH: Final = 256

EXPECTED: Final[dict[ColumnKind, str]] = {
    "number": "expected a finite number or null",
    "flag": "expected true, false, a finite number or null",
    "text": "expected a string or null",
    "segment": "expected a string, an integer or null (the segment column)",
}


@dataclass(frozen=True)
class ColumnRule:
    """What one column of a row may hold. ``integral``: a numeric segment column, whose
    integers stay integers so that rows route to the segments training named."""

    name: str
    kind: ColumnKind
    integral: bool = False
    spec: FeatureSpec | None = None
    """The feature (None for a segment column that is not a feature)."""
    max_length: int | None = None
    """The longest text allowed, in characters (text and segment columns)."""


def row_rules(
    schema: FeatureSchema, segment_column: str | None, *, max_text: int = MAX_TEXT_LENGTH
) -> tuple[ColumnRule, ...]:
    """The rule of each column; ``max_text``: the version's ``serving.max_text_length``."""
    rules: list[ColumnRule] = []
    for spec in schema.features:
        longest = None
        if spec.kind == "categorical":
            kind: ColumnKind = "text"
            longest = max([max_text, *map(len, spec.categories)])
        elif spec.dtype.startswith("bool"):
            kind = "flag"
        else:
            kind = "number"
        integral = spec.name == segment_column and kind != "text"
        rules.append(ColumnRule(spec.name, kind, integral, spec, longest))
    if segment_column is not None and segment_column not in schema.names:
        rules.append(ColumnRule(segment_column, "segment", max_length=max_text))
    return tuple(rules)


def text_limit(manifest: dict[str, Any]) -> int:
    """A version's ``serving.max_text_length``; a manifest without one has the default."""
    value = (manifest.get("serving") or {}).get("max_text_length", MAX_TEXT_LENGTH)
    return value if isinstance(value, int) and value > 0 else MAX_TEXT_LENGTH


def too_long(limit: int) -> str:
    """The problem of a text over ``limit`` characters, as the server and batch scoring say it."""
    return f"a text of at most {limit:,} characters (serving.max_text_length)"


def unseen_policy(manifest: dict[str, Any]) -> UnseenPolicy:
    """The policy a version was packaged with; a manifest without one accepts (as before)."""
    value = (manifest.get("serving") or {}).get("unseen_categories", "accept")
    return value if value in UNSEEN_POLICIES else "accept"


def known_categories(spec: FeatureSpec, shown: int = 8) -> str:
    cats = spec.categories
    listed = ", ".join(cats[:shown])
    return f"{listed}, ... ({len(cats)} in all)" if len(cats) > shown else listed or "none"


@dataclass(frozen=True)
class BadCell:
    row: int
    """Position in the frame, from 0."""
    column: str
    problem: str
    value: Any


@dataclass
class FrameCheck:
    """The outcome of :func:`check_frame`: what is missing or bad, and the frame to predict
    (text columns of numbers parsed, categorical columns as strings)."""

    frame: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    bad: list[BadCell] = field(default_factory=list)
    """The first ``keep`` bad cells, in row order."""
    bad_per_column: dict[str, int] = field(default_factory=dict)
    bad_rows: int = 0
    unseen: dict[str, int] = field(default_factory=dict)
    """Unseen categorical values per feature (the rows of a ``reject`` policy are bad)."""

    @property
    def ok(self) -> bool:
        return not self.missing and not self.bad_rows


def check_frame(
    df: pd.DataFrame,
    rules: Sequence[ColumnRule],
    *,
    text_numbers: bool = False,
    reject_unseen: bool = False,
    keep: int = 20,
) -> FrameCheck:
    """Check every column of ``df`` that a rule names (other columns pass through untouched).

    ``text_numbers``: the file holds text only (CSV), so a number written as text is a number;
    otherwise (JSON, Parquet) a text in a numeric column is refused, as the server does.
    """
    missing = [r.name for r in rules if r.name not in df.columns]
    if missing:
        return FrameCheck(df, missing=missing)
    frame = df.copy(deep=False)
    masks: dict[str, np.ndarray] = {}
    problems: dict[str, str] = {}
    unseen: dict[str, int] = {}
    for rule in rules:
        col = df[rule.name]
        if rule.kind in ("number", "flag"):
            parsed, bad = _numbers(col, text_numbers=text_numbers, flags=rule.kind == "flag")
            frame[rule.name] = _integers(parsed) if rule.integral else parsed
        else:
            parsed, bad = _texts(col, integers=rule.kind == "segment" or text_numbers)
            frame[rule.name] = parsed
            if rule.max_length is not None:
                long = (parsed.str.len() > rule.max_length).fillna(False).to_numpy(dtype=bool)
                if long.any():
                    masks[rule.name + "\0long"] = long & ~bad
                    problems[rule.name + "\0long"] = too_long(rule.max_length)
            spec = rule.spec
            if spec is not None and spec.kind == "categorical":
                new = (
                    ~bad
                    & parsed.notna().to_numpy()
                    & (spec.lookup.get_indexer(pd.Index(parsed)) < 0)
                )
                count = int(new.sum())
                if count:
                    unseen[rule.name] = count
                    if reject_unseen:
                        masks[rule.name + "\0unseen"] = new
                        problems[rule.name + "\0unseen"] = (
                            f"unseen category (known: {known_categories(spec)})"
                        )
        if bad.any():
            masks[rule.name] = bad
            problems[rule.name] = EXPECTED[rule.kind]
    check = FrameCheck(frame, unseen=unseen)
    if not masks:
        return check
    any_bad = np.zeros(len(df), dtype=bool)
    for mask in masks.values():
        any_bad |= mask
    check.bad_rows = int(any_bad.sum())
    for key, mask in masks.items():
        name = key.split("\0", 1)[0]
        check.bad_per_column[name] = check.bad_per_column.get(name, 0) + int(mask.sum())
    cells: list[BadCell] = []
    for key, mask in masks.items():
        name = key.split("\0", 1)[0]
        values = df[name]
        for i in np.flatnonzero(mask)[:keep]:
            cells.append(BadCell(int(i), name, problems[key], values.iloc[i]))
    cells.sort(key=lambda c: c.row)
    check.bad = cells[:keep]
    return check


def _numbers(col: pd.Series, *, text_numbers: bool, flags: bool) -> tuple[pd.Series, np.ndarray]:
    """The column as float64 (nulls NaN, booleans 0/1 when ``flags``) and its bad cells:
    anything but a finite number or null (a boolean only when ``flags``; a text of a number
    only when ``text_numbers``)."""
    if pd.api.types.is_bool_dtype(col) and not flags:
        return col, col.notna().to_numpy()
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        array = col.to_numpy(dtype=np.float64, na_value=np.nan)
        return pd.Series(array, index=col.index), np.isinf(array)
    values = col.astype(object)
    null = values.isna().to_numpy()
    if pd.api.types.is_string_dtype(col) and col.dtype != object:  # texts only (a CSV)
        is_text, is_bool = ~null, np.zeros(len(col), dtype=bool)
    else:
        kinds = values.map(type)
        is_text = kinds.map(lambda t: issubclass(t, str)).to_numpy(dtype=bool)
        is_bool = kinds.map(lambda t: issubclass(t, bool | np.bool_)).to_numpy(dtype=bool)
    numbers = values.where(~is_bool & (~is_text if not text_numbers else True))
    parsed = np.array(pd.to_numeric(numbers, errors="coerce"), dtype=np.float64)
    if flags and is_bool.any():
        parsed[is_bool] = values[is_bool].astype(float).to_numpy()
    return pd.Series(parsed, index=col.index), ~null & ~np.isfinite(parsed)


def _integers(parsed: pd.Series) -> pd.Series:
    """A numeric segment column: whole numbers as integers (7, not 7.0), as the server routes
    them, so that the segment keys are the ones training named."""
    array = parsed.to_numpy()
    whole = np.isfinite(array) & (array == np.round(array))
    if (whole | np.isnan(array)).all():
        return parsed.astype("Int64")
    values = [int(v) if w else v for v, w in zip(array.tolist(), whole.tolist(), strict=True)]
    return pd.Series(values, index=parsed.index, dtype=object)


def _texts(col: pd.Series, *, integers: bool) -> tuple[pd.Series, np.ndarray]:
    """The column as pandas strings (nulls NA) and its bad cells: anything but a text or null
    (or an integer, when ``integers``: a segment column, or any column of a CSV)."""
    if pd.api.types.is_string_dtype(col) and col.dtype != object:
        return col.astype("string"), np.zeros(len(col), dtype=bool)
    if pd.api.types.is_integer_dtype(col) and integers:
        return col.astype("string"), np.zeros(len(col), dtype=bool)
    values = col.astype(object)
    null = values.isna().to_numpy()

    def fits(v: Any) -> bool:
        if isinstance(v, str):
            return True
        return integers and isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)

    ok = values.map(fits).to_numpy(dtype=bool) | null
    parsed = values.where(ok).astype("string")
    return parsed, ~ok
