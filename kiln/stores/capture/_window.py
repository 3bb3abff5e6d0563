"""One monitoring window of a pipeline's captures, as a DuckDB view that SQL aggregates.

The window is over the capture's ``event_time = coalesce(event_ts, ts)``: when the request's event
happened if the caller said so, else when it was served. A caller's event time is never after
``ts``, so a window starting at ``start`` reads only the date folders from ``start``'s date on.
A corrupt file is skipped and named in :attr:`CaptureWindow.skipped`, never fatal: the monitor
reports it and judges the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from kiln.errors import StoreError
from kiln.stores.capture._reader import _ADDED, _READ_OPTIONS, _date_folders, _identifier, _Root
from kiln.stores.capture._records import INPUTS, PIPELINE_NAME, STAGES, utc_date

__all__ = ["CaptureWindow", "open_window"]

VIEW = "captures"


@dataclass
class CaptureWindow:
    """The captures of ``pipeline`` with ``start <= event_time < end`` of the given stages, as the
    DuckDB view ``captures`` (the capture columns, ``pipeline``, ``date`` and ``event_time``)."""

    pipeline: str
    start: datetime
    end: datetime
    stages: tuple[str, ...]
    files: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    """Each corrupt file left out, with its error."""
    columns: set[str] = field(default_factory=set)
    inputs: list[str] = field(default_factory=list)
    """The typed feature names that some file of the window holds in ``inputs``."""
    _con: duckdb.DuckDBPyConnection | None = None
    _root: _Root | None = None

    @property
    def empty(self) -> bool:
        return self._con is None

    def feature_sql(self, name: str, *, numeric: bool) -> str:
        """The SQL expression of feature ``name``'s value in the view: the typed
        ``inputs.<name>`` where a file has it, else the JSON ``features`` text's value;
        ``numeric`` casts to DOUBLE (text that is no number is null), else VARCHAR."""
        cast = "DOUBLE" if numeric else "VARCHAR"
        path = ("$." + '"' + name.replace('"', '\\"') + '"').replace("'", "''")
        from_json = f"TRY_CAST(json_extract_string(features, '{path}') AS {cast})"
        if name in self.inputs:
            return f"COALESCE(TRY_CAST({INPUTS}.{_identifier(name)} AS {cast}), {from_json})"
        return from_json

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        """Run ``sql`` over the view ``captures`` (this window's rows only). A window without
        capture files (:attr:`empty`) has no view: check it first. A file whose footer reads but
        whose data does not (a corrupt page) fails the query: each file is then read in full,
        the unreadable ones join :attr:`skipped`, and the query runs once more without them."""
        try:
            return self._query(sql, params)
        except StoreError:
            if not self._drop_unreadable():
                raise
        if self._con is None:
            raise StoreError(
                f"every capture file of the window of {self.pipeline} is unreadable",
                hint="see the skipped files; move them aside",
            )
        return self._query(sql, params)

    def _query(self, sql: str, params: dict[str, Any] | None) -> pa.Table:
        if self._con is None:
            raise StoreError(f"the window of {self.pipeline} has no capture files")
        try:
            relation = self._con.sql(sql, params=params)
            if relation is None:
                raise StoreError(f"the query over the window of {self.pipeline} returned nothing")
            return relation.to_arrow_table()
        except duckdb.Error as e:
            raise StoreError(f"the query over the window of {self.pipeline} failed: {e}") from e

    def _drop_unreadable(self) -> bool:
        """Read every file in full; skip those that fail and rebuild the view. True when one
        was dropped."""
        if self._root is None or self._con is None:
            return False
        bad = {}
        for path in self.files:
            try:
                with self._root.fs.open(path, "rb") as fh:
                    pq.read_table(fh)
            except (OSError, pa.ArrowException) as e:
                bad[path] = _error_text(e)
        if not bad:
            return False
        self.skipped.update(bad)
        self.files = [f for f in self.files if f not in bad]
        self._con.close()
        self._con = None
        if self.files:
            _build_view(self, self._root)
        return True

    @property
    def rows(self) -> int:
        if self._con is None:
            return 0
        return int(self.query(f"SELECT count(*) AS n FROM {VIEW}").column("n")[0].as_py())

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> CaptureWindow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_window(
    root_url: str,
    pipeline: str,
    *,
    start: datetime,
    end: datetime,
    stages: Sequence[str] = ("production", "canary"),
) -> CaptureWindow:
    """The window's captures as a view (see :class:`CaptureWindow`); close it when done."""
    if not PIPELINE_NAME.fullmatch(pipeline):
        raise ValueError(f"invalid pipeline name {pipeline!r}")
    if start.utcoffset() is None or end.utcoffset() is None:
        raise ValueError("start and end must be timezone-aware (UTC)")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"stages {bad} are not among {sorted(STAGES)}")
    root = _Root(root_url)
    folder = f"{root.path}/pipeline={pipeline}"
    first = utc_date(start)
    files = [f for day, path in _date_folders(root, folder) if day >= first for f in
             root.parquet_files(path)]  # fmt: skip
    window = CaptureWindow(pipeline, start.astimezone(UTC), end.astimezone(UTC), tuple(stages), [])
    if not files:
        return window
    with root.connect() as con:
        files, window.skipped = _readable(con, files, root)
    window.files = files
    window._root = root
    if files:
        _build_view(window, root)
    return window


def _build_view(window: CaptureWindow, root: _Root) -> None:
    """Create the view ``captures`` over ``window.files`` on a new connection."""
    con = root.connect()
    files = window.files
    try:
        source = f"read_parquet($files, {_READ_OPTIONS})"
        present = set(con.sql(f"SELECT * FROM {source} LIMIT 0", params={"files": files}).columns)
        added = [sql for name, sql in _ADDED.items() if name not in present]
        window.columns = present | set(_ADDED)
        if INPUTS in present:
            kinds = con.sql(
                f"SELECT {INPUTS} FROM {source} LIMIT 0", params={"files": files}
            ).types[0]
            window.inputs = [str(name) for name, _ in kinds.children]
        at = "COALESCE(event_ts, ts)" if "event_ts" in present else "ts"
        stage_list = ", ".join(f"'{s}'" for s in window.stages)
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(
            f"CREATE TEMP VIEW {VIEW} AS SELECT * FROM (SELECT *, {at} AS event_time"
            f"{''.join(', ' + a for a in added)} FROM read_parquet([{listed}], {_READ_OPTIONS}))"
            f" WHERE stage IN ({stage_list})"
            f" AND event_time >= TIMESTAMPTZ '{window.start.isoformat()}'"
            f" AND event_time < TIMESTAMPTZ '{window.end.isoformat()}'"
        )
    except duckdb.Error as e:
        con.close()
        raise StoreError(f"cannot read the captures of {window.pipeline}: {e}") from e
    window._con = con


def _error_text(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _readable(
    con: duckdb.DuckDBPyConnection, files: list[str], root: _Root
) -> tuple[list[str], dict[str, str]]:
    """The files DuckDB reads, and the error of each one it cannot (checked one by one only
    when reading them all together fails, which is what one corrupt file does)."""
    try:
        con.sql(
            f"SELECT count(*) FROM read_parquet($files, {_READ_OPTIONS})", params={"files": files}
        ).fetchall()
        return files, {}
    except duckdb.Error:
        pass
    good: list[str] = []
    skipped: dict[str, str] = {}
    for path in files:
        try:
            with root.fs.open(path, "rb") as fh:
                pq.read_metadata(fh)
            con.sql("SELECT count(*) FROM read_parquet($f)", params={"f": [path]}).fetchall()
        except (OSError, pa.ArrowException, duckdb.Error) as e:
            skipped[path] = _error_text(e)
            continue
        good.append(path)
    return good, skipped
