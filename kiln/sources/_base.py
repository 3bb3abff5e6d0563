"""The one contract of ``kiln.sources``: a source reads a query into an Arrow table."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyarrow as pa

from kiln.errors import SourceError

EMPTY_HINT = (
    "check data.query in kiln.yaml: its WHERE clause (dates, filters, joins) may exclude "
    "every row; run it by hand to see what it returns"
)
SQL_HINT = "fix data.query in kiln.yaml; the database's message above says what it refused"


@runtime_checkable
class Source(Protocol):
    """Where training data comes from.

    ``read(None)`` reads the default rows (all of ``data`` for files); a database needs a query.
    ``describe()`` is safe to print and log: passwords are masked.
    """

    def read(self, query: str | None) -> pa.Table: ...

    def describe(self) -> str: ...


def first_line(query: str, limit: int = 120) -> str:
    """The query's first non-blank line, shortened, to name it in an error."""
    lines = [line.strip() for line in query.strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return line + (" ..." if len(lines) > 1 else "")


def indent(text: str) -> str:
    """A (possibly multi-line) database message, indented under Kiln's own line."""
    lines = text.strip().expandtabs(2).splitlines()
    return "\n".join("    " + line.rstrip() for line in lines if line.strip())


def sql_error(where: str, described: str, query: str, message: str) -> SourceError:
    return SourceError(
        f"{where}: the query failed on {described}:\n{indent(message)}\n"
        f"  query: {first_line(query)}",
        hint=SQL_HINT,
    )


def require_rows(table: pa.Table, *, where: str, described: str, query: str | None) -> pa.Table:
    if table.num_rows > 0:
        return table
    if query is None:
        raise SourceError(
            f"{where}: the query returned no rows: {described} holds no rows",
            hint="point data.source at files that contain data",
        )
    raise SourceError(
        f"{where}: the query returned no rows from {described}\n  query: {first_line(query)}",
        hint=EMPTY_HINT,
    )
