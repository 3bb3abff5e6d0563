"""Reading captures with DuckDB: the last K of a pipeline, or any SQL over all of them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Final

import duckdb
import fsspec
import orjson
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from kiln.errors import NotFoundError, StoreError
from kiln.stores.capture._records import (
    CAPTURE_SCHEMA,
    INPUTS,
    INPUTS_KEYS,
    PIPELINE_NAME,
    STAGES,
    utc_date,
)

__all__ = ["query_captures", "read_captures"]

_HINT = "the server captures requests when capture.sample_rate > 0"
_SELECTED = "__kiln_columns__"
_ADDED: Final = {
    "label": "CAST(NULL AS VARCHAR) AS label",
    "probabilities": "CAST(NULL AS MAP(VARCHAR, DOUBLE)) AS probabilities",
    "unseen": "CAST(NULL AS VARCHAR[]) AS unseen",
    "status": "CAST(NULL AS SMALLINT) AS status",
    "event_ts": "CAST(NULL AS TIMESTAMPTZ) AS event_ts",
}
_READ_SCHEMA: Final = pa.schema(
    [f.with_nullable(True) if f.name in ("features", "status") else f for f in CAPTURE_SCHEMA]
).insert(2, pa.field("pipeline", pa.string()))
_READ_OPTIONS = (
    "hive_partitioning = true, union_by_name = true,"
    " hive_types = {'pipeline': VARCHAR, 'date': DATE}"
)
_FILE = "__kiln_file__"


class _Root:
    """The capture folder under ``root_url`` and a DuckDB connection that can read it."""

    def __init__(self, root_url: str) -> None:
        try:
            fs, root = fsspec.core.url_to_fs(root_url)
        except (ImportError, ValueError, OSError) as e:
            raise StoreError(
                f"cannot open the capture store at {root_url}: {e}",
                hint="pass a folder or an fsspec URL (s3://bucket/prefix)",
            ) from e
        self.fs: fsspec.AbstractFileSystem = fs
        self.path = f"{root.rstrip('/')}/captures"
        self.local = isinstance(fs, LocalFileSystem)

    def for_duckdb(self, path: str) -> str:
        return path if self.local else str(self.fs.unstrip_protocol(path))

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(str(p).rstrip("/") for p in self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StoreError(f"cannot list captures in {self.for_duckdb(path)}: {e}") from e

    def parquet_files(self, folder: str) -> list[str]:
        names = [p for p in self.listdir(folder) if p.endswith(".parquet")]
        return [self.for_duckdb(p) for p in names if not p.rsplit("/", 1)[-1].startswith(".")]

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        if not self.local:
            con.register_filesystem(self.fs)
        return con


def read_captures(
    root_url: str,
    pipeline: str,
    *,
    stage: str | None = "production",
    last: int | None = None,
    since: datetime | None = None,
) -> pa.Table:
    """The most recent ``last`` captures of ``pipeline`` (all when None), oldest first.

    ``stage=None`` reads every stage; ``since`` keeps captures with ``ts >= since``. Columns are
    those of :data:`CAPTURE_SCHEMA` plus ``pipeline``; ``features`` is each request's JSON
    object (from the typed ``inputs`` of the files that have it, with the keys the request
    held); ``status`` is null in files written before it. Date folders are read newest first
    and only as far back as ``last`` needs.
    """
    if not PIPELINE_NAME.fullmatch(pipeline):
        raise ValueError(f"invalid pipeline name {pipeline!r}")
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {sorted(STAGES)} (or None for all)")
    if last is not None and last < 0:
        raise ValueError(f"last must be >= 0, got {last}")
    if since is not None and since.utcoffset() is None:
        raise ValueError("since must be timezone-aware (UTC)")
    root = _Root(root_url)
    folder = f"{root.path}/pipeline={pipeline}"
    days = _date_folders(root, folder)
    first_day = utc_date(since) if since is not None else date.min
    wanted = [path for day, path in days if day >= first_day]
    where: list[str] = []
    params: dict[str, Any] = {}
    if stage is not None:
        where.append("stage = $stage")
        params["stage"] = stage
    if since is not None:
        where.append("ts >= $since")
        params["since"] = since.astimezone(UTC)
    sql = f"SELECT {_SELECTED} FROM read_parquet($files, {_READ_OPTIONS}, filename = {_FILE!r})"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if last is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY ts DESC, request_id DESC LIMIT {int(last)})"
    sql += " ORDER BY ts, request_id"

    files: list[str] = []
    table: pa.Table | None = None
    window, grow = 0, (len(wanted) if last is None else 1)
    with root.connect() as con:
        while window < len(wanted):
            for path in wanted[window : window + grow]:
                files.extend(root.parquet_files(path))
            window += grow
            grow = 3 * window
            if files:
                source = f"read_parquet($files, {_READ_OPTIONS})"
                columns, typed = _columns(con, source, files, root.for_duckdb(folder))
                table = _run(
                    con,
                    sql.replace(_SELECTED, columns),
                    {**params, **typed, "files": files},
                    root.for_duckdb(folder),
                )
                if last is None or table.num_rows >= last:
                    break
    if table is not None:
        return table.cast(_READ_SCHEMA)
    if any(root.parquet_files(path) for day, path in days if day < first_day):
        return _READ_SCHEMA.empty_table()  # captures exist, none since `since`
    raise NotFoundError(
        f"no captures of pipeline {pipeline!r} in {root.for_duckdb(folder)}", hint=_HINT
    )


def _date_folders(root: _Root, folder: str) -> list[tuple[date, str]]:
    """The ``date=`` folders under ``folder``, newest first."""
    days: list[tuple[date, str]] = []
    for path in root.listdir(folder):
        key, _, value = path.rsplit("/", 1)[-1].partition("=")
        try:
            day = date.fromisoformat(value) if key == "date" else None
        except ValueError:
            day = None
        if day is not None:
            days.append((day, path))
    return sorted(days, reverse=True)


def query_captures(root_url: str, sql: str) -> pa.Table:
    """Run DuckDB ``sql`` over a view ``captures`` of every capture file of every pipeline.

    The view has the columns of :data:`CAPTURE_SCHEMA` plus the partition columns ``pipeline``
    (VARCHAR) and ``date`` (DATE), and ``inputs`` once a file has typed features: a struct of
    the union of every version's features (DuckDB ``union_by_name``), e.g. ``inputs.distance``;
    ``status`` is null in files written before it.
    """
    root = _Root(root_url)
    pattern = f"{root.path}/pipeline=*/date=*/*.parquet"
    try:
        found = root.fs.glob(pattern)
    except OSError as e:
        raise StoreError(f"cannot list captures in {root.for_duckdb(root.path)}: {e}") from e
    if not found:
        raise NotFoundError(f"no captures in {root.for_duckdb(root.path)}", hint=_HINT)
    glob = root.for_duckdb(pattern).replace("'", "''")
    source = f"read_parquet('{glob}', {_READ_OPTIONS})"
    with root.connect() as con:
        present = _present(con, source, None)
        added = [sql for name, sql in _ADDED.items() if name not in present]
        view = f"CREATE VIEW captures AS SELECT {', '.join(['*', *added])} FROM {source}"
        return _run(
            con,
            sql,
            None,
            root.for_duckdb(root.path),
            setup=view,
            hint="query the view 'captures': the capture columns plus pipeline and date"
            " (`kiln capture query --help` lists them)",
        )


def _present(con: duckdb.DuckDBPyConnection, source: str, files: list[str] | None) -> set[str]:
    try:
        relation = con.sql(
            f"SELECT * FROM {source} LIMIT 0", params=None if files is None else {"files": files}
        )
    except duckdb.Error as e:
        raise StoreError(f"cannot read the capture files: {e}") from e
    return set(relation.columns) if relation is not None else set()


def _columns(
    con: duckdb.DuckDBPyConnection, source: str, files: list[str], where: str
) -> tuple[str, dict[str, list[str]]]:
    """The select list of :data:`_READ_SCHEMA`, null for columns that no file has yet, and
    ``features`` rebuilt as JSON from the typed ``inputs`` of the files that have it (with the
    keys each file holds, by SQL), plus the parameters that expression needs."""
    present = _present(con, source, files)
    params: dict[str, list[str]] = {}
    names: list[str] = []
    for name in _READ_SCHEMA.names:
        if name in _ADDED and name not in present:
            names.append(_ADDED[name])
        elif name == "features" and INPUTS in present:
            by_keys: dict[tuple[str, ...], list[str]] = {}
            for file, held in _file_keys(con, files, where).items():
                by_keys.setdefault(tuple(held), []).append(file)
            cases: list[str] = []
            for i, (keys, group) in enumerate(by_keys.items()):
                params[f"typed_{i}"] = group
                pairs = ", ".join(f"{_literal(k)}, {INPUTS}.{_identifier(k)}" for k in keys)
                json = f"CAST(json_object({pairs}) AS VARCHAR)"
                cases.append(f"WHEN list_contains($typed_{i}, {_FILE}) THEN {json}")
            if cases:
                names.append(
                    f"CASE WHEN features IS NOT NULL OR {INPUTS} IS NULL THEN features"
                    f" {' '.join(cases)} ELSE CAST(to_json({INPUTS}) AS VARCHAR) END AS features"
                )
            else:
                names.append("features")
        else:
            names.append(name)
    return ", ".join(names), params


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _file_keys(
    con: duckdb.DuckDBPyConnection, files: list[str], where: str
) -> dict[str, list[str]]:
    """The keys of each file's typed requests, from its Parquet key-value metadata."""
    try:
        found = con.execute(
            "SELECT file_name, value FROM parquet_kv_metadata($files) WHERE key = $key",
            {"files": files, "key": INPUTS_KEYS},
        ).fetchall()
    except duckdb.Error as e:
        raise StoreError(f"cannot read the capture files' metadata in {where}: {e}") from e
    return {str(name): orjson.loads(value) for name, value in found}


def _run(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: dict[str, Any] | None,
    where: str,
    *,
    setup: str | None = None,
    hint: str | None = None,
) -> pa.Table:
    try:
        if setup:
            con.execute(setup)
        relation = con.sql(sql, params=params)
        if relation is None:
            raise StoreError(f"the query over the captures in {where} returned no result")
        return relation.to_arrow_table()
    except duckdb.Error as e:
        raise StoreError(f"the query over the captures in {where} failed: {e}", hint=hint) from e
