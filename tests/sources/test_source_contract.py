"""The Source contract, run on every backend with the same three rows."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from kiln.errors import SourceError
from kiln.sources import Source

QUERY_WHERE = "kiln.yaml:5:10: data.query"  # what the `backend` fixture passes as `query_where`


def test_is_a_source(backend: tuple[Source, str]) -> None:
    source, _ = backend
    assert isinstance(source, Source)
    assert source.describe()


def test_reads_the_rows(backend: tuple[Source, str], rows: list[dict[str, Any]]) -> None:
    source, table = backend
    result = source.read(f"SELECT id, name, value FROM {table} ORDER BY id")
    assert isinstance(result, pa.Table)
    assert result.column_names == ["id", "name", "value"]
    assert result.column("id").to_pylist() == [r["id"] for r in rows]
    assert result.column("name").to_pylist() == [r["name"] for r in rows]
    assert result.column("value").to_pylist() == [r["value"] for r in rows]


def test_reads_timestamps(backend: tuple[Source, str], rows: list[dict[str, Any]]) -> None:
    source, table = backend
    result = source.read(f"SELECT ts FROM {table} ORDER BY id").to_pandas()
    parsed = result["ts"].astype("datetime64[us]")  # SQLite returns text
    assert list(parsed) == [r["ts"] for r in rows]


def test_query_text_reaches_the_database_untouched(backend: tuple[Source, str]) -> None:
    source, table = backend
    query = f"SELECT name FROM {table} WHERE name LIKE 'a%' OR name = 'x :y ? %s' ORDER BY id"
    assert source.read(query).column("name").to_pylist() == ["alpha"]


def test_empty_result_is_an_error(backend: tuple[Source, str]) -> None:
    source, table = backend
    with pytest.raises(SourceError) as info:
        source.read(f"SELECT * FROM {table}\nWHERE id > 100")
    message = str(info.value)
    assert message.startswith(QUERY_WHERE + ": the query returned no rows")
    assert f"SELECT * FROM {table}" in message
    assert "WHERE clause" in (info.value.hint or "")


def test_sql_error_names_the_query_and_the_database_message(
    backend: tuple[Source, str],
) -> None:
    source, table = backend
    with pytest.raises(SourceError) as info:
        source.read(f"SELECT no_such_column FROM {table}\nORDER BY 1")
    message = str(info.value)
    assert message.startswith(QUERY_WHERE + ": the query failed on ")
    assert "no_such_column" in message  # the database's own message names it
    assert f"query: SELECT no_such_column FROM {table} ..." in message
    assert "data.query" in (info.value.hint or "")
