"""The ``checks:`` of kiln.yaml as one pandera schema, and its failures as a report.

Each declared check becomes one pandera ``Check``; the schema is validated lazily so every
failure is reported at once. pandera decides what failed; the report entry (expected,
observed, failing examples) is then computed from the data, in kiln.yaml's own terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors as pa_errors
import pandera.pandas as pa

from kiln.config.models import ChecksConfig, ColumnChecks, FreshnessCheck
from kiln.errors import DataCheckError

_EXAMPLES = 5


@dataclass(frozen=True)
class _Declared:
    """One declared check: which column (None for the whole frame) and which kind."""

    column: str | None
    kind: str  # not_null | min | max | allowed | unique | min_rows | freshness
    expected: str
    failing: Callable[[pd.Series], pd.Series] | None = None  # the rows that break it


def run_checks(
    df: pd.DataFrame,
    checks: ChecksConfig,
    *,
    times: pd.Series | None,
    time_column: str | None,
    where: str,
) -> dict[str, object]:
    columns: dict[str, pa.Column] = {}
    column_checks: dict[str, list[_Declared]] = {}
    for name, spec in checks.columns.items():
        pandera_checks, declared = _column_checks(name, spec)
        # nulls are judged by not_null alone; the other checks look at non-null values only
        columns[name] = pa.Column(nullable=True, checks=pandera_checks)
        column_checks[name] = declared

    frame_checks: list[pa.Check] = []
    frame_declared: list[_Declared] = []
    if checks.min_rows is not None:
        n = checks.min_rows
        frame_checks.append(pa.Check(lambda d: len(d) >= n, name="min_rows"))
        frame_declared.append(_Declared(None, "min_rows", f">= {n} rows"))
    newest: pd.Timestamp | None = None
    if checks.freshness is not None:
        newest = _newest(times) if times is not None else None
        cutoff = _cutoff(newest, checks.freshness)
        fresh = newest is not None and newest >= cutoff
        frame_checks.append(pa.Check(lambda _d: fresh, name="freshness"))
        frame_declared.append(
            _Declared(
                time_column,
                "freshness",
                f"newest >= {_plain(cutoff.floor('s'))} (max_age {_age(checks.freshness.max_age)})",
            )
        )

    declared_all = [d for ds in column_checks.values() for d in ds] + frame_declared
    summary: dict[str, object] = {
        "rows": len(df),
        "checks_run": len(declared_all),
        "checks": [f"{d.column or '*'}:{d.kind}" for d in declared_all],
    }
    if not declared_all:
        return summary
    schema = pa.DataFrameSchema(columns, checks=frame_checks, strict=False, coerce=False)
    try:
        schema.validate(df, lazy=True, inplace=True)  # inplace: no copy; nothing is coerced
    except pa_errors.SchemaErrors as e:
        report = _report(df, e.failure_cases, column_checks, frame_declared, newest)
        raise DataCheckError(
            f"{where}: {len(report)} data check(s) failed on {len(df)} rows",
            report=report,
            hint="fix the data (or data.query) at its source, or, if the data is right, "
            "relax the thresholds under checks in kiln.yaml",
        ) from None
    if newest is not None:
        summary["newest"] = _plain(newest)
    return summary


def _column_checks(name: str, spec: ColumnChecks) -> tuple[list[pa.Check], list[_Declared]]:
    declared: list[_Declared] = []
    if spec.not_null is not None:
        declared.append(_Declared(name, "not_null", f"non-null share >= {spec.not_null}"))
    if spec.min is not None:
        low = spec.min
        declared.append(_Declared(name, "min", f">= {_number(low)}", lambda s: s < low))
    if spec.max is not None:
        high = spec.max
        declared.append(_Declared(name, "max", f"<= {_number(high)}", lambda s: s > high))
    if spec.allowed is not None:
        allowed = list(spec.allowed)
        declared.append(_Declared(name, "allowed", f"one of {allowed}", lambda s: ~s.isin(allowed)))
    if spec.unique:
        declared.append(
            _Declared(
                name,
                "unique",
                "each non-null value at most once",
                lambda s: s.duplicated(keep=False),
            )
        )
    checks = [_pandera_check(d, spec) for d in declared]
    return checks, declared


def _pandera_check(d: _Declared, spec: ColumnChecks) -> pa.Check:
    """The pandera check for ``d``: the same ``failing`` mask decides and then reports.

    ``n_failure_cases`` keeps pandera from formatting every failing row into its own message
    (seconds on a few hundred thousand rows); the report counts from the data instead.
    """
    if d.failing is None:  # not_null: one number for the whole column, nulls included
        share = spec.not_null if spec.not_null is not None else 0.0
        return pa.Check(lambda s: _share(s) >= share, ignore_na=False, name=d.kind)
    failing = d.failing
    return pa.Check(lambda s: ~failing(s), name=d.kind, n_failure_cases=_EXAMPLES)


def _report(
    df: pd.DataFrame,
    failures: pd.DataFrame,
    column_checks: dict[str, list[_Declared]],
    frame_declared: list[_Declared],
    newest: pd.Timestamp | None,
) -> list[dict[str, Any]]:
    order = [d for ds in column_checks.values() for d in ds] + frame_declared
    ranked: list[tuple[int, dict[str, Any]]] = []
    keys = ["schema_context", "column", "check", "check_number"]
    for (context, column, check, number), cases in failures.groupby(keys, dropna=False, sort=False):
        options: list[_Declared] = []
        if context == "Column" and column in column_checks:
            options = column_checks[str(column)]
        elif context == "DataFrameSchema":
            options = frame_declared
        i = _position(number)
        declared = options[i] if i is not None and i < len(options) else None
        if declared is None:  # a failure pandera found on its own; report it as it is
            values = list(cases["failure_case"])
            entry = _entry(str(column), str(check), "", None, values, count=len(values))
            ranked.append((len(order), entry))
            continue
        ranked.append((order.index(declared), _describe(df, declared, newest)))
    return [entry for _, entry in sorted(ranked, key=lambda r: r[0])]


def _describe(df: pd.DataFrame, d: _Declared, newest: pd.Timestamp | None) -> dict[str, Any]:
    if d.kind == "min_rows":
        return _entry("*", d.kind, d.expected, len(df), [], count=None)
    if d.kind == "freshness":
        return _entry(str(d.column), d.kind, d.expected, _plain(newest), [], count=None)
    series = df[str(d.column)]
    if d.failing is None:  # not_null: the examples are the rows that hold a null
        nulls = series.isna()
        share = round(_share(series), 4)
        rows = [f"row {_plain(i)}" for i in series.index[nulls][:_EXAMPLES]]
        return _entry(str(d.column), d.kind, d.expected, share, rows, count=int(nulls.sum()))
    mask = d.failing(series).fillna(False).astype(bool) & series.notna()
    bad = series[mask]
    observed: object
    if d.kind == "min":
        observed = _plain(series.min())
    elif d.kind == "max":
        observed = _plain(series.max())
    else:  # allowed, unique: how many distinct values are wrong
        observed = int(bad.nunique())
    examples = list(bad.drop_duplicates().head(_EXAMPLES))
    return _entry(str(d.column), d.kind, d.expected, observed, examples, count=int(mask.sum()))


def _entry(
    column: str,
    check: str,
    expected: str,
    observed: object,
    examples: list[Any],
    *,
    count: int | None,
) -> dict[str, Any]:
    return {
        "column": column,
        "check": check,
        "expected": expected,
        "observed": observed,
        "failing_examples": [_plain(v) for v in examples[:_EXAMPLES]],
        "failing_count": count,
    }


def _share(series: pd.Series) -> float:
    """Share of non-null values; 1.0 for no rows (emptiness is min_rows' business)."""
    return float(series.notna().mean()) if len(series) else 1.0


def _newest(times: pd.Series) -> pd.Timestamp | None:
    value = times.max()
    return None if value is None or pd.isna(value) else pd.Timestamp(value)


def _cutoff(newest: pd.Timestamp | None, fresh: FreshnessCheck) -> pd.Timestamp:
    """``as_of - max_age``, naive or aware like the data. Naive timestamps are taken as UTC,
    on both sides, so the result does not depend on the machine's time zone."""
    as_of = pd.Timestamp(fresh.as_of) if fresh.as_of is not None else pd.Timestamp.now(tz=UTC)
    if newest is not None and newest.tzinfo is None:
        if as_of.tzinfo is not None:
            as_of = as_of.tz_convert(UTC).tz_localize(None)
    elif as_of.tzinfo is None:
        as_of = as_of.tz_localize(UTC)
    return as_of - pd.Timedelta(fresh.max_age)


def _age(age: timedelta) -> str:
    return str(age).replace(", 0:00:00", "")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _position(value: object) -> int | None:
    """pandera's ``check_number`` (NaN for its own checks) as a list position."""
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float) and not math.isnan(value):
        return int(value)
    return None


def _plain(value: object) -> Any:
    """A JSON-friendly version of a value from the data (report entries end up in logs)."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp | datetime | date):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, str | int | float | bool) else str(value)
