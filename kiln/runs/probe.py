"""`kiln validate`'s look at the data, cheap enough to run before every commit.

It opens ``data.source`` (a missing file or an unreachable database is an error naming the line
of data.source), reads the first rows of ``data.query`` (an error in the query names the line of
data.query), checks that the columns kiln.yaml names are there, and warns about what would
train silently wrong: declared segment values that never occur in the data, and text features
that hold numbers. It never reads the whole table: a sample of rows and the distinct values of
the segment column, both limited in the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from kiln.config.loader import LoadedConfig
from kiln.pipeline.features import FeatureSchema
from kiln.pipeline.numeric_text import numeric_text
from kiln.runs.data import where_field
from kiln.sources import (
    Source,
    check_columns,
    distinct_values,
    open_source,
    runs_in_duckdb,
    sample_rows,
)
from kiln.sources.checks import suggest

__all__ = ["DataProbe", "numeric_text_warnings", "open_configured_source", "probe_data"]

SAMPLE_ROWS = 10_000
DISTINCT_LIMIT = 10_000


@dataclass(frozen=True)
class DataProbe:
    described: str
    sampled_rows: int
    segment_values: int | None = None
    """Distinct values of the segment column (None: no segments, or more than the limit)."""
    warnings: list[str] = field(default_factory=list)


def open_configured_source(loaded: LoadedConfig) -> Source:
    """The source of ``data.source``; its errors name the line of data.source, or of
    data.query for a failing query."""
    return open_source(
        loaded.config.data.source,
        base_dir=loaded.base_dir,
        where=f"{loaded.where('data', 'source')}: data.source",
        query_where=f"{loaded.where('data', 'query')}: data.query",
    )


def probe_data(loaded: LoadedConfig) -> DataProbe:
    """Raises SourceError / SchemaError (exit 3) for what would stop a run; returns warnings
    for what would train wrong."""
    cfg = loaded.config
    source = open_configured_source(loaded)
    df = sample_rows(source, cfg.data.query, SAMPLE_ROWS).to_pandas()
    seg = cfg.segments
    check_columns(
        df,
        target=cfg.target.column,
        features=cfg.features,
        segment_column=seg.column if seg else None,
        time_column=cfg.data.time_column,
        where=where_field(loaded),
    )
    warnings: list[str] = []
    found: int | None = None
    if seg is not None:
        values = distinct_values(source, cfg.data.query, seg.column, DISTINCT_LIMIT + 1)
        if len(values) <= DISTINCT_LIMIT:
            found = len(values)
            warnings += _segment_warnings(loaded, values)
    schema = FeatureSchema.infer(df, cfg.features, where=where_field(loaded)("features"))
    text = [f.name for f in schema.features if f.kind == "categorical"]
    warnings += numeric_text_warnings(loaded, df, text)
    return DataProbe(source.describe(), len(df), found, warnings)


def numeric_text_warnings(loaded: LoadedConfig, df: pd.DataFrame, text: list[str]) -> list[str]:
    """One warning per text feature (of ``text``) of ``df`` that holds numbers, at its line."""
    cfg = loaded.config
    duckdb = runs_in_duckdb(cfg.data.source)
    return [
        f"{loaded.where('features', cfg.features.index(found.column))}: features: "
        + found.message(duckdb=duckdb)
        for found in numeric_text(df, text)
    ]


def _segment_warnings(loaded: LoadedConfig, values: list[object]) -> list[str]:
    seg = loaded.config.segments
    if seg is None or not isinstance(seg.values, list):
        return []
    present = [str(v) for v in pd.Series(values, dtype=object).astype("string")]
    known = set(present)
    out = []
    for i, declared in enumerate(seg.values):
        if str(declared) in known:
            continue
        close = suggest(str(declared), present)
        out.append(
            f"{loaded.where('segments', 'values', i)}: segments.values: {declared!r} never "
            f"occurs in column {seg.column!r}"
            + (f" (did you mean {close!r}?)" if close else "")
            + "; no model is trained for it and its requests go to the fallback"
        )
    return out
