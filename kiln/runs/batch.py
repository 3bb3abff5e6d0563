"""Batch scoring (`kiln predict`): which version scores, reading the file of rows, and checking
every row with the rule the server applies (``kiln.pipeline.rows``) before predicting.

A row the server would refuse is refused here too, all together: the error names each bad row
(its line in a CSV), the column, what was expected and what it held. Columns that the version
does not use pass through to the output untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kiln.errors import DataError, NotFoundError, SchemaError
from kiln.pipeline.rows import BadCell, ColumnRule, check_frame, row_rules
from kiln.registry.predictor import Prediction, Predictor
from kiln.stores.metadata.records import VersionRecord
from kiln.stores.metadata.repositories import VersionRepository

__all__ = ["Scored", "choose_version", "read_rows", "score_rows"]

_SHOWN = 20


def choose_version(
    versions: VersionRepository, pipeline: str, version: int | None
) -> VersionRecord:
    """``version`` when given (any stage, even blocked), else the production version."""
    if version is not None:
        return versions.get(pipeline, version)
    listed = versions.list(pipeline=pipeline)
    if not listed:
        raise NotFoundError(
            f"pipeline {pipeline!r} has no model version",
            hint="`kiln run kiln.yaml` registers one; `kiln models list` shows them",
        )
    production = [v for v in listed if v.stage == "production"]
    if not production:
        stages = ", ".join(f"v{v.version} {v.stage}" for v in listed[-5:])
        raise NotFoundError(
            f"pipeline {pipeline!r} has no production version (newest: {stages})",
            hint=f"pass --version N to score with one of them, or `kiln promote {pipeline} N`"
            " first; `kiln models list` shows the versions",
        )
    return production[-1]


def read_rows(path: Path, *, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of a .csv, .parquet or .json file. In a CSV, ``text_columns`` (categorical
    features, the segment column) are read as text, so that "007" stays "007"."""
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="pass --input a .csv, .parquet or .json file")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".json":
            return pd.read_json(path, orient="records", dtype=False)
        if path.suffix in (".csv", ".gz"):
            return pd.read_csv(path, dtype=dict.fromkeys(text_columns, "string"))
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot be read ({e})", hint="check the file's format") from e
    raise DataError(
        f"{path}: unknown file type {path.suffix!r}", hint="use .csv, .parquet or .json"
    )


@dataclass(frozen=True)
class Scored:
    prediction: Prediction
    unseen: dict[str, int]
    """Rows per feature whose value training never saw."""


def score_rows(df: pd.DataFrame, predictor: Predictor, *, path: Path, label: str) -> Scored:
    """Check every row as the server would, then predict; DataError naming the bad rows."""
    rules = row_rules(
        predictor.schema, predictor.segment_column, max_text=predictor.max_text_length
    )
    is_csv = _is_csv(path)
    check = check_frame(
        df, rules, text_numbers=is_csv, reject_unseen=predictor.unseen_policy == "reject"
    )
    if check.missing:
        raise SchemaError(
            f"{path}: missing column(s) {', '.join(map(repr, check.missing))};"
            f" {label} expects {_expected(rules)}",
            hint="add them (leave a cell empty where the value is unknown);"
            f" `kiln models show` lists the features of {label}",
        )
    if check.bad_rows:
        lines = [_bad_cell(cell, csv=is_csv) for cell in check.bad]
        more = check.bad_rows - len({c.row for c in check.bad})
        if more > 0:
            lines.append(f"... and {more} more row(s)")
        per_column = ", ".join(f"{k!r} {n}" for k, n in sorted(check.bad_per_column.items()))
        raise DataError(
            f"{path}: {check.bad_rows} of {len(df)} row(s) cannot be scored by {label}"
            f" (bad values per column: {per_column}):\n  " + "\n  ".join(lines),
            hint="fix or drop these rows: the prediction server refuses them too (422)",
        )
    return Scored(predictor.predict(check.frame), check.unseen)


def _is_csv(path: Path) -> bool:
    return path.suffix in (".csv", ".gz")


def _expected(rules: Sequence[ColumnRule]) -> str:
    names = [r.name for r in rules]
    shown = ", ".join(names[:30])
    return shown + (f", ... ({len(names)} columns)" if len(names) > 30 else "")


def _bad_cell(cell: BadCell, *, csv: bool) -> str:
    where = f"row {cell.row + 1}" + (f" (line {cell.row + 2} of the CSV)" if csv else "")
    value = repr(cell.value)
    if len(value) > 60:
        value = value[:57] + "..."
    return f"{where}, column {cell.column!r}: {cell.problem}, got {value}"
