"""`kiln labels add`: actual outcomes, hours or days after the requests, for live performance.

The labels come from a file (.csv or .parquet, read by DuckDB) or from a query on
``monitor.labels.source`` (default: the pipeline's ``data.source``). Two columns are taken:
the key (``monitor.labels.key``: ``request_id``, the X-Request-ID each request was sent with,
``<id>:<index>`` for a row of a batch; or a feature whose value identifies the request) and the
outcome (``monitor.labels.column``, default the target column). They are stored beside the
captures (:class:`~kiln.stores.labels.LabelStore`); a label sent again replaces the old one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kiln.cli._common import _settings, out
from kiln.errors import ConfigError, DataError, SchemaError, SourceError

if TYPE_CHECKING:
    import pyarrow as pa

    from kiln.config import LoadedConfig

_FORMATS = {".csv": "read_csv", ".parquet": "read_parquet", ".csv.gz": "read_csv"}


def labels_add(
    ctx: typer.Context,
    pipeline: Annotated[str, typer.Argument(help="The pipeline's name (kiln.yaml `name`).")],
    file: Annotated[
        Path | None, typer.Argument(help="A .csv or .parquet file of labels.", show_default=False)
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(help="SQL on monitor.labels.source (default: data.source) instead of FILE."),
    ] = None,
    config: Annotated[Path, typer.Option(help="The pipeline's kiln.yaml.")] = Path("kiln.yaml"),
) -> None:
    """Add labels (actual outcomes) of served requests: a re-sent label replaces the old one.

    The key column is monitor.labels.key (default request_id: the X-Request-ID of each request;
    a batch row's id is `<id>:<index>`), the label column monitor.labels.column (default: the
    target column).
    """
    from kiln.config import load_config
    from kiln.monitoring.performance import unknown_labels
    from kiln.stores.labels import LabelStore

    if (file is None) == (query is None):
        raise ConfigError(
            "give either FILE or --query",
            hint="`kiln labels add PIPELINE labels.csv`, or"
            " `kiln labels add PIPELINE --query 'SELECT ...'`",
        )
    loaded = load_config(config)
    cfg = loaded.config
    if cfg.name != pipeline:
        raise ConfigError(
            f"{config} is the config of pipeline {cfg.name!r}, not {pipeline!r}",
            hint=f"pass --config with the kiln.yaml of {pipeline}",
        )
    key = cfg.monitor.labels.key
    column = cfg.monitor.labels.column or cfg.target.column
    if file is not None:
        table, where = _read_file(file), str(file)
    else:
        table, where = _run_query(loaded, query or ""), "the --query result"
    labels = _labels_of(table, where, key, column, regression=cfg.target.task == "regression")
    settings = _settings(ctx)
    store = LabelStore(settings.artifact_root)
    result = store.add(pipeline, labels)
    unknown = unknown_labels(settings.artifact_root, store, pipeline, cfg.monitor)
    out.print(
        f"[green]✓[/] {result.rows:,} labels of {pipeline} stored from {where}"
        f" ({result.duplicates:,} duplicate keys in it, the last one kept;"
        f" {result.replaced:,} replaced an earlier label)"
    )
    if result.bad_rows:
        out.print(f"[yellow]![/] {result.bad_rows:,} rows not stored:")
        for bad in result.bad:
            out.print(f"  row {bad.row + 1}: key {bad.key!r}: {bad.reason}", highlight=False)
        if result.bad_rows > len(result.bad):
            out.print(f"  ... and {result.bad_rows - len(result.bad):,} more")
    if unknown:
        out.print(
            f"[yellow]![/] {unknown:,} labelled keys of {pipeline} match no captured request"
            " (stored anyway: the request may be captured by another server's store, or not yet)"
        )
    else:
        out.print(f"every labelled key of {pipeline} matches a captured request")


def _read_file(path: Path) -> pa.Table:
    import duckdb

    name = path.name.lower()
    reader = next((r for suffix, r in _FORMATS.items() if name.endswith(suffix)), None)
    if reader is None:
        raise DataError(
            f"{path}: cannot read labels from a {path.suffix or 'file without suffix'}",
            hint="give a .csv or .parquet file",
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="check the path of the label file")
    try:
        with duckdb.connect() as con:
            relation = con.sql(f"SELECT * FROM {reader}($path)", params={"path": str(path)})
            table = relation.to_arrow_table()
    except duckdb.Error as e:
        raise DataError(
            f"{path}: cannot be read as {reader.removeprefix('read_')}: {str(e).splitlines()[0]}",
            hint="check that the file is a valid CSV (with a header row) or Parquet file",
        ) from e
    if table.num_rows == 0:
        raise DataError(f"{path}: holds no rows", hint="give a file with one label per row")
    return table


def _run_query(loaded: LoadedConfig, query: str) -> pa.Table:
    from kiln.sources import open_source

    cfg = loaded.config
    spec = cfg.monitor.labels.source or cfg.data.source
    field = ("monitor", "labels", "source") if cfg.monitor.labels.source else ("data", "source")
    source = open_source(
        spec,
        base_dir=loaded.base_dir,
        where=f"{loaded.where(*field)}: {'.'.join(field)}",
        query_where="kiln labels add --query",
    )
    table = source.read(query)
    if table.num_rows == 0:
        raise SourceError(
            f"kiln labels add --query: the query returned no rows from {source.describe()}",
            hint="check its WHERE clause: run it by hand to see what it returns",
        )
    return table


def _labels_of(table: pa.Table, where: str, key: str, column: str, *, regression: bool) -> pa.Table:
    """The ``key`` and ``label`` columns the store takes, checked against the config."""
    import pyarrow as pa

    names = table.column_names
    missing = [c for c in (key, column) if c not in names]
    if missing:
        raise SchemaError(
            f"{where}: no column {', '.join(map(repr, missing))} (columns: {', '.join(names)})",
            hint=f"the key column is monitor.labels.key ({key!r}) and the label column"
            f" monitor.labels.column (default: the target, {column!r}): rename the columns"
            " (SELECT ... AS ...) or set them in kiln.yaml",
        )
    kind = table.column(column).type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    numeric = numeric or pa.types.is_decimal(kind) or pa.types.is_boolean(kind)
    if regression and not numeric:
        raise SchemaError(
            f"{where}: label column {column!r} holds {kind}; a regression target needs numbers",
            hint=f"cast {column!r} to a number (CAST({column} AS DOUBLE)), or point"
            " monitor.labels.column at the column of outcomes",
        )
    key_kind = table.column(key).type
    textual = pa.types.is_string(key_kind) or pa.types.is_large_string(key_kind)
    if not (textual or pa.types.is_integer(key_kind) or pa.types.is_dictionary(key_kind)):
        raise SchemaError(
            f"{where}: key column {key!r} holds {key_kind}; expected text or integers",
            hint=f"cast {key!r} to text: it must equal the X-Request-ID of each request"
            " (or the key feature's value)",
        )
    return pa.table({"key": table.column(key), "label": table.column(column)})
