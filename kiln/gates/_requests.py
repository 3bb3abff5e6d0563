"""Requests checked as the prediction server checks them, in bulk.

A captured request's ``features`` is JSON; the server takes it when it is an object holding
exactly the candidate's keys (every feature and the segment column, no other), each value of
its kind (``kiln.serving``'s schema). Here a whole window of captured requests is checked at
once: those the server would take become one DataFrame, and every other request gets its
problems, by position, to be reported as failing on the candidate.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kiln.registry.predictor import Predictor

__all__ = [
    "Problems",
    "parse_requests",
    "refuse_unseen",
    "request_columns",
    "request_frame",
    "request_kinds",
]

_WANTED = {
    "number": "expected a finite number or null",
    "bool": "expected a finite number, a boolean or null",
    "text": "expected a string or null",
    "segment": "expected a string, an integer or null (the segment column)",
}

Problems = dict[int, list[tuple[str, str | None]]]
"""Per failing request (its position): (problem, the value at fault or None)."""


def parse_requests(texts: list[str]) -> tuple[list[Any], Problems]:
    """Each request's ``features`` JSON; one that is not a JSON object is a problem."""
    problems: Problems = {}
    try:
        rows: list[Any] = [orjson.loads(t) for t in texts]
    except orjson.JSONDecodeError:
        rows = [_loads(t) for t in texts]
    for i, row in enumerate(rows):
        if type(row) is not dict:
            problems[i] = [("features are not a JSON object", _short(texts[i]))]
            rows[i] = None
    return rows, problems


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:  # the standard library reads what orjson refuses (NaN, Infinity)
            return json.loads(text)
        except ValueError:
            return None


def request_kinds(predictor: Predictor) -> dict[str, str]:
    """The keys a request must hold and what each takes: the features, then the segment
    column (required even when it is not a feature), as in ``kiln.serving``'s schema."""
    kinds: dict[str, str] = {}
    for spec in predictor.schema.features:
        if spec.kind == "categorical":
            kinds[spec.name] = "text"
        elif spec.dtype.startswith("bool"):
            kinds[spec.name] = "bool"
        else:
            kinds[spec.name] = "number"
    col = predictor.segment_column
    if col is not None and col not in kinds:
        kinds[col] = "segment"
    return kinds


def request_columns(
    rows: list[Any], kinds: dict[str, str], problems: Problems
) -> tuple[np.ndarray, list[list[Any]]]:
    """The positions of the requests that hold exactly the keys the candidate takes, and
    their values, one list per key; the others get their missing and unknown keys as
    problems."""
    n = len(kinds)
    if not problems and all(len(row) == n for row in rows):
        try:  # the usual case: n keys per request, and each name among them
            return np.arange(len(rows)), [[row[name] for row in rows] for name in kinds]
        except KeyError:
            pass
    ok = [row is not None and row.keys() == kinds.keys() for row in rows]
    for i, row in enumerate(rows):
        if ok[i] or row is None:
            continue
        found = problems.setdefault(i, [])
        for name, kind in kinds.items():
            if name not in row:
                what = "segment column" if kind == "segment" else "feature"
                found.append((f"missing {what} {name!r}", None))
        for key in row:
            if key not in kinds:
                found.append((f"unknown feature {key!r} (the candidate does not take it)", None))
    valid = np.flatnonzero(np.asarray(ok, dtype=bool))
    picked = [rows[i] for i in valid.tolist()]
    return valid, [[row[name] for row in picked] for name in kinds]


def request_frame(
    columns: list[list[Any]], valid: np.ndarray, kinds: dict[str, str], problems: Problems
) -> tuple[pd.DataFrame, np.ndarray]:
    """The requests at ``valid`` as one DataFrame (a column per key), and their positions; a
    value of the wrong kind makes its request a problem and leaves the frame."""
    names = list(kinds)
    if valid.size == 0:
        return pd.DataFrame(columns=names), valid
    arrays: list[pa.Array] = []
    keep = np.ones(valid.size, dtype=bool)
    for name, values in zip(names, columns, strict=True):
        array, bad = _column(kinds[name], values)
        for j, got in bad:
            keep[j] = False
            problem = f"{name!r}: {_WANTED[kinds[name]]}"
            problems.setdefault(int(valid[j]), []).append((problem, _short(got)))
        arrays.append(array)
    table = pa.Table.from_arrays(arrays, names=names)
    if not keep.all():
        table = table.filter(pa.array(keep))
        valid = valid[keep]
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    return frame, valid


def refuse_unseen(
    frame: pd.DataFrame, valid: np.ndarray, predictor: Predictor, problems: Problems
) -> tuple[pd.DataFrame, np.ndarray]:
    """Under the candidate's ``unseen_categories: reject``, a request holding a categorical
    value that training never saw is refused (the server answers it 422): it becomes a problem
    and leaves the frame. Unseen is the predictor's own rule (``FeatureSchema.unseen_in_frame``)."""
    if predictor.unseen_policy != "reject" or valid.size == 0:
        return frame, valid
    unseen = predictor.schema.unseen_in_frame(frame)
    if unseen is None:
        return frame, valid
    keep = np.ones(valid.size, dtype=bool)
    for j, features in enumerate(unseen):
        if not features:
            continue
        keep[j] = False
        found = problems.setdefault(int(valid[j]), [])
        for name in features:
            value = _short(frame[name].iloc[j])
            found.append(
                (f"unseen category {value} in feature {name!r} (unseen_categories: reject)", None)
            )
    return frame.loc[keep].reset_index(drop=True), valid[keep]


_NONE = type(None)
_UNIFORM: dict[str, tuple[frozenset[type], ...]] = {
    "number": (frozenset({int, float, _NONE}),),
    "bool": (frozenset({int, float, _NONE}), frozenset({bool, _NONE})),
    "text": (frozenset({str, _NONE}),),
    "segment": (frozenset({str, _NONE}), frozenset({int, _NONE})),
}
"""Per kind, the sets of Python types that Arrow converts exactly, with no value refused."""


def _column(kind: str, values: list[Any]) -> tuple[pa.Array, list[tuple[int, Any]]]:
    """One key's values as an Arrow array, and the (position, value) of those of the wrong
    kind. A column of one of the kind's uniform type sets (the usual case) is converted by
    Arrow at once; any other is checked value by value."""
    types = set(map(type, values))
    if any(types <= uniform for uniform in _UNIFORM[kind]):
        try:
            array = pa.array(values, from_pandas=False)
        except (pa.ArrowException, OverflowError):  # an integer beyond 64 bits
            array = None
        if array is not None and (
            not pa.types.is_floating(array.type) or pc.all(pc.is_finite(array)).as_py() is not False
        ):
            if pa.types.is_boolean(array.type):
                array = array.cast(pa.float64())
            return array, []
    return _column_by_value(kind, values)


def _column_by_value(kind: str, values: list[Any]) -> tuple[pa.Array, list[tuple[int, Any]]]:
    bad: list[tuple[int, Any]] = []
    out: list[Any] = []
    for j, v in enumerate(values):
        value = _coerce(kind, v)
        if value is _WRONG:
            bad.append((j, v))
            value = None
        out.append(value)
    text = kind in ("text", "segment")
    return pa.array(out, pa.string() if text else pa.float64()), bad


_WRONG = object()


def _coerce(kind: str, v: Any) -> Any:
    """``v`` as the server takes it for a key of ``kind``, or ``_WRONG``."""
    if v is None:
        return None
    t = type(v)
    if kind == "text":
        return v if t is str else _WRONG
    if kind == "segment":
        return v if t is str else str(v) if t is int else _WRONG
    if t is bool:
        return float(v) if kind == "bool" else _WRONG
    if (t is int or t is float) and math.isfinite(v):
        return float(v)
    return _WRONG


def _short(value: Any) -> str:
    text = value if isinstance(value, str) and value.startswith(("{", "[")) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
