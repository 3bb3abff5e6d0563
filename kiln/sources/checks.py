"""Checks on the data a source returned, before any model sees it.

``check_columns`` guards the shape kiln.yaml relies on (target, features, segment and time
columns) and raises ``SchemaError``. ``validate_data`` runs the declared ``checks:`` of
kiln.yaml through pandera and raises ``DataCheckError`` with one report entry per failure.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import pandas as pd

from kiln.config.models import ChecksConfig
from kiln.errors import SchemaError
from kiln.sources._datachecks import run_checks

__all__ = ["check_columns", "parse_times", "time_cast", "validate_data"]

Where = Callable[[str], str]
_SHOWN_COLUMNS = 40


def check_columns(
    df: pd.DataFrame,
    *,
    target: str,
    features: list[str],
    segment_column: str | None,
    time_column: str | None,
    where: Where,
    split_key: str | None = None,
) -> None:
    """Raise ``SchemaError`` if a column named in kiln.yaml is missing, the segment column
    has nulls, or the time column holds no timestamps. All missing columns are named at once."""
    fields: list[tuple[str, list[str]]] = [
        ("target", [target]),
        ("features", features),
        ("segments.column", [segment_column] if segment_column else []),
        ("data.time_column", [time_column] if time_column else []),
        ("evaluation.split.key", [split_key] if split_key else []),
    ]
    available = [str(c) for c in df.columns]
    problems = []
    for field, names in fields:
        missing = [n for n in names if n not in df.columns]
        if missing:
            problems.append(f"{where(field)}: {missing_text(missing, available)}")
    if problems:
        raise SchemaError(
            "\n".join(problems) + f"\n  available columns: {columns_text(available)}",
            hint="fix the column names in kiln.yaml, or select (or rename) the columns in "
            "data.query",
        )
    if segment_column:
        _check_segment_nulls(df, segment_column, where("segments.column"))
    if time_column:
        _check_time_column(df[time_column], time_column, where("data.time_column"))


def validate_data(
    df: pd.DataFrame, checks: ChecksConfig, *, time_column: str | None, where: Where
) -> dict[str, object]:
    """Run the ``checks:`` of kiln.yaml on ``df``, all at once.

    Raises ``SchemaError`` if a checked column is not in the data, ``DataCheckError`` (with
    its report) if any check fails; otherwise returns a summary for the run's log.
    """
    available = [str(c) for c in df.columns]
    for name in checks.columns:
        if name not in df.columns:
            raise SchemaError(
                f"{where(f'checks.columns.{name}')}: {missing_text([name], available)}\n"
                f"  available columns: {columns_text(available)}",
                hint="fix the column name under checks.columns, or select it in data.query",
            )
    if checks.freshness is not None and time_column is None:
        raise SchemaError(
            f"{where('checks.freshness')}: freshness reads data.time_column, which is not set",
            hint="set data.time_column, or remove checks.freshness",
        )
    if checks.freshness is not None and time_column not in df.columns:
        raise SchemaError(
            f"{where('checks.freshness')}: {missing_text([str(time_column)], available)} "
            f"(data.time_column)\n  available columns: {columns_text(available)}",
            hint="fix data.time_column, or select it in data.query",
        )
    for name, spec in checks.columns.items():
        if (spec.min is not None or spec.max is not None) and not _is_number(df[name]):
            raise SchemaError(
                f"{where(f'checks.columns.{name}')}: min/max need a numeric column, but "
                f"{name!r} holds {df[name].dtype}",
                hint=f"remove min/max for {name!r}, or CAST it to a number in data.query",
            )
    times = parse_times(df[time_column])[0] if checks.freshness and time_column else None
    return run_checks(df, checks, times=times, time_column=time_column, where=where("checks"))


def parse_times(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``series`` as datetimes, and the mask of non-null values that could not be parsed.

    Already datetime-like columns are returned as they are. Strings are parsed as ISO 8601
    first, then each format on its own; values with mixed UTC offsets are converted to UTC.
    """
    if pd.api.types.is_datetime64_any_dtype(series):
        return series, pd.Series(False, index=series.index)
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return pd.Series(pd.NaT, index=series.index), series.notna()
    best: pd.Series | None = None
    for fmt in ("ISO8601", "mixed"):
        try:
            parsed = pd.to_datetime(series, format=fmt, errors="coerce")
        except (ValueError, TypeError):
            try:
                parsed = pd.to_datetime(series, format=fmt, errors="coerce", utc=True)
            except (ValueError, TypeError):
                continue
        if best is None or parsed.isna().sum() < best.isna().sum():
            best = parsed
        if not (series.notna() & best.isna()).any():
            break
    if best is None:
        return pd.Series(pd.NaT, index=series.index), series.notna()
    return best, series.notna() & best.isna()


def missing_text(missing: list[str], available: list[str]) -> str:
    """ "column 'x' is not in the data (did you mean 'y'?)" for one or more names."""
    guesses = [suggest(name, available) for name in missing]
    if len(missing) == 1:
        guess = f" (did you mean {guesses[0]!r}?)" if guesses[0] else ""
        return f"column {missing[0]!r} is not in the data{guess}"
    parts = [
        repr(name) + (f" (did you mean {guess!r}?)" if guess else "")
        for name, guess in zip(missing, guesses, strict=True)
    ]
    return f"columns {', '.join(parts)} are not in the data"


def suggest(name: str, available: list[str]) -> str | None:
    by_case = [c for c in available if c.lower() == name.lower()]
    if by_case:
        return by_case[0]
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
    return close[0] if close else None


def columns_text(available: list[str]) -> str:
    shown = ", ".join(available[:_SHOWN_COLUMNS])
    more = len(available) - _SHOWN_COLUMNS
    return shown + (f", ... and {more} more" if more > 0 else "") if available else "(none)"


def _is_number(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _check_segment_nulls(df: pd.DataFrame, column: str, where: str) -> None:
    nulls = df[column].isna()
    count = int(nulls.sum())
    if not count:
        return
    examples = [_plain_index(i) for i in df.index[nulls][:5]]
    raise SchemaError(
        f"{where}: segment column {column!r} has {count} null value(s) "
        f"({count / len(df):.2%} of {len(df)} rows), e.g. at rows {examples}",
        hint=f"filter them out in data.query (WHERE {column} IS NOT NULL) or coalesce them "
        f"into a segment of their own (COALESCE({column}, 'unknown') AS {column})",
    )


def _check_time_column(series: pd.Series, column: str, where: str) -> None:
    if pd.api.types.is_datetime64_any_dtype(series):
        return
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        expr, reading = time_cast(series, column)
        raise SchemaError(
            f"{where}: time column {column!r} holds {series.dtype} values, not timestamps"
            + (f" ({reading})" if reading else ""),
            hint=f"convert it in data.query (DuckDB SQL), e.g. {expr} AS {column}",
        )
    parsed, bad = parse_times(series)
    if bad.any() or parsed.notna().sum() == 0:
        examples = [repr(v) for v in series[bad].unique()[:5]]
        detail = (
            f"{int(bad.sum())} of {len(series)} values are not timestamps, e.g. "
            f"{', '.join(examples)}"
            if bad.any()
            else "it has no values"
        )
        raise SchemaError(
            f"{where}: time column {column!r} ({series.dtype}) cannot be read as timestamps: "
            f"{detail}",
            hint=f"return a TIMESTAMP column from data.query (e.g. CAST({column} AS TIMESTAMP)) "
            "or ISO 8601 text such as 2013-01-01 05:00:00",
        )


def time_cast(series: pd.Series, column: str) -> tuple[str, str]:
    """A DuckDB expression turning the numeric time column ``column`` into timestamps, chosen
    from its values, and how they were read (e.g. "decimal years such as 2013.5")."""
    v = pd.to_numeric(series, errors="coerce").dropna().astype("float64")
    if v.empty:
        return f"to_timestamp({column})", ""
    low, high = float(v.min()), float(v.max())
    fractional = v[v != v.round()]
    integral = fractional.empty
    example = float(v.iloc[0] if integral else fractional.iloc[0])
    shown = f"{example:g}" if abs(example) < 1e6 else f"{example:.0f}"
    month, day = (v // 100) % 100, v % 100
    if integral and 1e7 <= low <= high < 1e8 and month.between(1, 12).all() and day.ge(1).all():
        return (
            f"strptime(CAST(CAST({column} AS BIGINT) AS VARCHAR), '%Y%m%d')",
            f"dates written as YYYYMMDD such as {shown}",
        )
    if 1000 <= low <= high < 3000:
        return (
            f"make_date(CAST(floor({column}) AS INTEGER), 1, 1) + "
            f"to_seconds(({column} - floor({column})) * 365.25 * 86400)",
            f"{'years' if integral else 'decimal years'} such as {shown}",
        )
    if max(abs(low), abs(high)) >= 1e11:
        return f"to_timestamp({column} / 1000)", f"epoch milliseconds such as {shown}"
    return f"to_timestamp({column})", "if they are epoch seconds"


def _plain_index(label: object) -> object:
    return label.item() if hasattr(label, "item") else label
