"""DuckDB sources: a DuckDB file opened read-only, and parquet/csv files queried as ``data``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa

from kiln.errors import SourceError
from kiln.sources._base import indent, require_rows, sql_error

FileFormat = Literal["parquet", "csv"]

CSV_NULL_MARKERS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
"""Cells read as missing in CSV files: pandas' default ``na_values``, so that a numeric column
with "NA" cells stays numeric (DuckDB alone reads only empty cells as missing)."""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _run(con: duckdb.DuckDBPyConnection, query: str, *, where: str, described: str) -> pa.Table:
    try:
        relation = con.sql(query)
        if relation is None:
            raise SourceError(
                f"{where}: the query returned no result set from {described}",
                hint="data.query must be a SELECT (or another statement that returns rows)",
            )
        return relation.to_arrow_table()
    except duckdb.Error as e:
        raise sql_error(where, described, query, str(e)) from e


class DuckDBFileSource:
    """A DuckDB database file, opened read-only for each read (so writers are not locked out
    between runs). A query is required: the file may hold many tables."""

    def __init__(self, path: Path, *, where: str, query_where: str | None = None) -> None:
        self.path = path
        self.where = where
        self.query_where = query_where or where

    def describe(self) -> str:
        return f"DuckDB file {self.path}"

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as e:
            raise SourceError(
                f"{self.where}: cannot open {self.describe()}:\n{indent(str(e))}",
                hint="make sure the file is a DuckDB database written by a compatible DuckDB "
                "version, and that no other process holds it open for writing",
            ) from e

    def tables(self) -> list[str]:
        """Tables and views in the file; names outside the ``main`` schema are qualified."""
        con = self._connect()
        try:
            rows = con.sql(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_catalog = current_database() "
                "AND table_schema NOT IN ('information_schema', 'pg_catalog') "
                "ORDER BY table_schema <> 'main', table_schema, table_name"
            ).fetchall()
        finally:
            con.close()
        return [name if schema == "main" else f"{schema}.{name}" for schema, name in rows]

    def read(self, query: str | None) -> pa.Table:
        if query is None:
            tables = self.tables()
            found = ", ".join(tables) if tables else "none"
            example = tables[0] if tables else "my_table"
            raise SourceError(
                f"{self.where}: data.query is needed to read {self.describe()} "
                f"(tables found: {found})",
                hint=f"add data.query to kiln.yaml, e.g. `query: SELECT * FROM {example}`",
            )
        con = self._connect()
        try:
            table = _run(con, query, where=self.query_where, described=self.describe())
        finally:
            con.close()
        return require_rows(table, where=self.query_where, described=self.describe(), query=query)


class FileSource:
    """Parquet or CSV files (one path or a glob), exposed to the query as the view ``data``
    in an in-memory DuckDB. ``read(None)`` returns every row."""

    def __init__(
        self, pattern: Path, fmt: FileFormat, *, where: str, query_where: str | None = None
    ) -> None:
        self.pattern = pattern
        self.fmt = fmt
        self.where = where
        self.query_where = query_where or where

    def describe(self) -> str:
        return f"{self.fmt} file(s) {self.pattern}"

    def _reader(self) -> str:
        if self.fmt == "parquet":
            return f"read_parquet({_literal(str(self.pattern))})"
        nulls = ", ".join(_literal(m) for m in CSV_NULL_MARKERS)
        return f"read_csv_auto({_literal(str(self.pattern))}, nullstr = [{nulls}])"

    def read(self, query: str | None) -> pa.Table:
        con = duckdb.connect(":memory:")
        try:
            try:
                con.execute(f"CREATE VIEW data AS SELECT * FROM {self._reader()}")
            except duckdb.Error as e:
                raise SourceError(
                    f"{self.where}: cannot read {self.describe()}:\n{indent(str(e))}",
                    hint=f"make sure every file matched by data.source is valid {self.fmt}",
                ) from e
            sql = "SELECT * FROM data" if query is None else query
            table = _run(con, sql, where=self.query_where, described=self.describe())
        finally:
            con.close()
        where = self.where if query is None else self.query_where
        return require_rows(table, where=where, described=self.describe(), query=query)
