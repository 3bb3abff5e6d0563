"""`kiln init --from`: a first kiln.yaml inferred from a sample of the data (pure, no I/O).

``infer_pipeline`` looks at the columns (target values, timestamps, ids, kinds) and decides
what a new user would otherwise type; ``render_yaml`` writes it as a commented kiln.yaml that
says why each column was used or left out.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import pandas as pd

from kiln.errors import SchemaError

__all__ = ["Column", "Inferred", "infer_pipeline", "render_yaml"]

_MAX_CATEGORIES = 1000
"""A text column with more distinct values than this is left out (too many categories)."""

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


@dataclass(frozen=True)
class Column:
    """One column of the data and what the scaffold does with it."""

    name: str
    role: str
    """``feature``, ``target``, ``time``, ``segment`` or ``left out``."""
    note: str


@dataclass(frozen=True)
class Inferred:
    target: str
    task: str
    time_column: str | None
    segment_column: str | None
    rows: int
    columns: list[Column] = field(default_factory=list)
    segment_values: int = 0
    segments_reaching_min_rows: int = 0
    min_rows: int = 0
    target_not_null: float = 1.0

    @property
    def features(self) -> list[Column]:
        return [c for c in self.columns if c.role == "feature"]

    @property
    def left_out(self) -> list[Column]:
        return [c for c in self.columns if c.role == "left out"]


def infer_pipeline(
    df: pd.DataFrame,
    *,
    target: str,
    segment: str | None = None,
    time_column: str | None = None,
    where: str = "the data",
) -> Inferred:
    """Decide task, time column, features and segments from ``df`` (a sample of the rows)."""
    names = [str(c) for c in df.columns]
    for flag, col in (("--target", target), ("--segment", segment), ("--time-column", time_column)):
        if col is not None and col not in names:
            raise SchemaError(
                f"{where}: {flag} {col!r} is not a column; columns: {', '.join(names)}",
                hint=f"pass one of the columns above to {flag}",
            )
    task = _task(df[target], where)
    times = [c for c in names if _is_time(df[c]) and c not in (target, segment)]
    if time_column is None and len(times) == 1:
        time_column = times[0]
    n = len(df)
    columns = [Column(target, "target", f"{task} target")]
    if time_column is not None:
        columns.append(Column(time_column, "time", "timestamp: splits train and holdout"))
    if segment is not None:
        columns.append(Column(segment, "segment", "one model per value"))
    taken = {c.name for c in columns}
    for name in names:
        if name not in taken:
            columns.append(_judge(name, df[name], n, several_times=len(times) > 1))
    inferred = Inferred(
        target=target, task=task, time_column=time_column, segment_column=segment, rows=n,
        columns=columns, target_not_null=float(df[target].notna().mean()) if n else 1.0,
    )  # fmt: skip
    if not inferred.features:
        raise SchemaError(
            f"{where}: no column besides the target can be a feature "
            + "; ".join(f"{c.name}: {c.note}" for c in inferred.left_out),
            hint="select numeric or text columns in --query (derive them from timestamps)",
        )
    if segment is None:
        return inferred
    counts = df[segment].astype("string").value_counts(dropna=True)
    min_rows = max(20, min(1000, n // 100))
    reaching = int((counts * 0.8 >= min_rows).sum())  # about 80% of the rows train
    return Inferred(
        **{**inferred.__dict__, "segment_values": len(counts), "min_rows": min_rows,
           "segments_reaching_min_rows": reaching},
    )  # fmt: skip


def _task(s: pd.Series, where: str) -> str:
    values = s.dropna().unique()
    boolean = pd.api.types.is_bool_dtype(s)
    numeric = pd.api.types.is_numeric_dtype(s) or boolean
    if numeric and len(values) == 2 and (boolean or {float(v) for v in values} <= {0.0, 1.0}):
        return "classification"
    if numeric and not boolean and len(values) > 2:
        return "regression"
    shown = ", ".join(map(str, sorted(map(str, values))[:5]))
    raise SchemaError(
        f"{where}: cannot train on target {s.name!r} (dtype {s.dtype}, {len(values)} distinct"
        f" values: {shown}); Kiln predicts a number (regression) or a 0/1 label (classification)",
        hint="derive a number or a 0/1 column in --query, e.g. (status = 'late')::int AS late",
    )


def _is_time(s: pd.Series) -> bool:
    return bool(pd.api.types.is_datetime64_any_dtype(s)) or (
        s.dtype == object and not s.dropna().empty and isinstance(s.dropna().iloc[0], pd.Timestamp)
    )


def _judge(name: str, s: pd.Series, rows: int, *, several_times: bool) -> Column:
    """Feature or left out, with the reason shown in kiln.yaml."""
    non_null = s.dropna()
    distinct = int(non_null.nunique())
    if _is_time(s) or (s.dtype == object and not non_null.empty and _is_date(non_null.iloc[0])):
        why = (
            "several timestamp columns: pass --time-column to split on one" if several_times else ""
        )
        return Column(name, "left out", "timestamp; derive hour/weekday from it in data.query"
                      + (f" ({why})" if why else ""))  # fmt: skip
    if non_null.empty:
        return Column(name, "left out", "always null")
    if distinct == 1:
        return Column(name, "left out", f"one value only ({non_null.iloc[0]!s})")
    numeric = pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
    integral = pd.api.types.is_integer_dtype(s) or pd.api.types.is_string_dtype(s)
    if rows > 1 and distinct == rows and integral:
        return Column(name, "left out", "unique per row: an id, not a feature")
    if numeric:
        return Column(name, "feature", "numeric")
    if pd.api.types.is_string_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
        if distinct > _MAX_CATEGORIES:
            return Column(name, "left out", f"text with {distinct} distinct values (too many)")
        return Column(name, "feature", f"categorical, {distinct} values")
    return Column(name, "left out", f"dtype {s.dtype} is neither a number nor text")


def _is_date(value: object) -> bool:
    import datetime as dt

    return isinstance(value, dt.date | dt.datetime)


def _q(text: str) -> str:
    """A YAML scalar for ``text``: bare when safe, else a JSON string (valid YAML)."""
    return text if _PLAIN.match(text) and text.lower() not in _YAML_WORDS else json.dumps(text)


def render_yaml(
    inferred: Inferred, *, name: str, owner: str, source: str, query: str | None, described: str
) -> str:
    """The commented kiln.yaml of ``inferred``; it validates and runs as written."""
    i = inferred
    regression = i.task == "regression"
    lines = [
        f"# kiln.yaml written by `kiln init --from` from {described} ({i.rows} rows).",
        "# `kiln validate kiln.yaml` checks it; `kiln run kiln.yaml` trains and registers a"
        " version.",
        f"name: {_q(name)}",
        f"owner: {json.dumps(owner)}",
        f"description: {json.dumps(f'Predicts {i.target} ({i.task}).')}",
        "",
        "data:",
        f"  source: {json.dumps(source)}",
    ]
    if query:
        lines += ["  query: |", *(f"    {line}" for line in query.strip().splitlines())]
    if i.time_column:
        lines.append(f"  time_column: {_q(i.time_column)}   # the holdout is the newest rows")
    else:
        lines.append("  # no time column: the holdout is a seeded random share of the rows")
    not_null = math.floor(max(0.0, i.target_not_null - 0.01) * 100) / 100
    lines += [
        "",
        "checks:",
        f"  min_rows: {max(1, i.rows // 10)}   # a tenth of the rows seen today",
        "  columns:",
        f"    {_q(i.target)}: {{not_null: {not_null}}}   # today: {i.target_not_null:.1%} not null",
        "",
        "target:",
        f"  column: {_q(i.target)}",
        f"  task: {i.task}"
        + ("   # numeric, many values" if regression else "   # two values: 0/1"),
        "",
        "features:   # kinds inferred from the data; keep only what is known when predicting",
    ]
    width = max(len(_q(c.name)) for c in i.features)
    lines += [f"  - {_q(c.name):<{width}}  # {c.note}" for c in i.features]
    if i.left_out:
        lines.append("# left out:")
        lines += [f"#   {c.name}: {c.note}" for c in i.left_out]
    if i.segment_column:
        lines += [
            "",
            "segments:",
            f"  column: {_q(i.segment_column)}   # {i.segment_values} values in the data",
            "  values: auto   # every value seen in the training rows",
            f"  min_rows: {i.min_rows}"
            f"   # {i.segments_reaching_min_rows} of {i.segment_values} segments reach it today;"
            " smaller ones are served by the fallback",
            "  fallback: global",
            "  on_segment_failure: fallback",
        ]
    estimator = "LGBMRegressor" if regression else "LGBMClassifier"
    metrics, primary = (
        ("[mae, rmse, r2]", "mae") if regression else ("[auc, logloss, accuracy]", "auc")
    )
    split = (
        "{holdout_fraction: 0.2}   # the newest 20% of rows by time"
        if i.time_column
        else "{kind: random, holdout_fraction: 0.2, seed: 0}"
    )
    lines += [
        "",
        "model:",
        f"  estimator: lightgbm.{estimator}",
        "  params: {n_estimators: 200, learning_rate: 0.05}",
        "",
        "evaluation:",
        f"  split: {split}",
        f"  metrics: {metrics}",
        f"  primary: {primary}",
        "",
        '# schedule: {cron: "0 3 * * *"}   # retrain every day at 03:00 (`kiln scheduler`)',
        "",
    ]
    return "\n".join(lines)
