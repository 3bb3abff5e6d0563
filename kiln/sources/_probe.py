"""A cheap look at what ``data.query`` returns: its first rows, the distinct values of a column.

The query is wrapped (``SELECT ... FROM (query) AS kiln_probe LIMIT n``) so the database does the
limiting. If the wrapped query fails (a statement that cannot be a subquery, or an error in the
query itself), the query is run as it is: its own error is then the one reported, with its own
text, or its rows are limited here.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from kiln.errors import SourceError
from kiln.sources._base import Source
from kiln.sources._duckdb import FileSource
from kiln.sources._sql import SQLSource

__all__ = ["distinct_values", "sample_rows"]


def sample_rows(source: Source, query: str | None, rows: int) -> pa.Table:
    """At most ``rows`` rows of ``query`` (errors as ``source.read`` raises them)."""
    base = _base_query(source, query)
    try:
        return source.read(f"SELECT * FROM (\n{base}\n) AS kiln_probe LIMIT {int(rows)}")
    except SourceError:
        return source.read(query).slice(0, rows)


def distinct_values(source: Source, query: str | None, column: str, limit: int) -> list[object]:
    """At most ``limit`` distinct non-null values of ``column`` in the rows of ``query``."""
    base = _base_query(source, query)
    name = _quote(source, column)
    try:
        table = source.read(
            f"SELECT DISTINCT {name} FROM (\n{base}\n) AS kiln_probe "
            f"WHERE {name} IS NOT NULL LIMIT {int(limit)}"
        )
        values = table.column(0)
    except SourceError:
        table = source.read(query)
        if column not in table.column_names:
            return []  # the column check names it
        values = pc.unique(table.column(column).drop_null())
    return values.to_pylist()[:limit]


def _base_query(source: Source, query: str | None) -> str:
    if query is None:
        if not isinstance(source, FileSource):
            source.read(None)  # raises: a database needs a query, and says which tables it has
        return "SELECT * FROM data"
    return query.strip().rstrip(";").rstrip()


def _quote(source: Source, column: str) -> str:
    if isinstance(source, SQLSource):
        return str(source.engine.dialect.identifier_preparer.quote(column))
    return '"' + column.replace('"', '""') + '"'
