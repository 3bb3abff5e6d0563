"""Any database SQLAlchemy can reach (PostgreSQL, SQLite, MySQL, ...).

SQLAlchemy parses the URL, loads the dialect and driver and opens the connection; the query
itself goes to the driver's own cursor untouched, so ``:name`` and ``%`` inside it mean what
they mean to the database (``sqlalchemy.text`` would take them for bind parameters).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from kiln.errors import SourceError
from kiln.sources._base import indent, require_rows, sql_error

CONNECT_TIMEOUT_S = 5
# Python module of a driver -> the package that provides it, when the names differ.
_PACKAGES = {
    "MySQLdb": "mysqlclient",
    "psycopg2": "psycopg2-binary",
    "psycopg": "'psycopg[binary]'",
    "cx_Oracle": "cx-Oracle",
}
_TIMEOUT_BACKENDS = {"postgresql", "mysql", "mariadb"}
_URL_HINT = (
    "use a SQLAlchemy URL such as postgresql://user:password@host:5432/db or "
    "sqlite:///relative/file.db, a .duckdb file, or parquet/csv files"
)


def mask(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _normalise(url: URL, base_dir: Path) -> URL:
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database).expanduser()
        if not path.is_absolute():
            url = url.set(database=str(base_dir / path))
    return url


class SQLSource:
    """A SQLAlchemy engine with no connection pool; each read opens and closes a connection."""

    def __init__(
        self, spec: str, *, base_dir: Path, where: str, query_where: str | None = None
    ) -> None:
        self.where = where
        self.query_where = query_where or where
        try:
            url = _normalise(sa.make_url(spec), base_dir)
        except (sa.exc.ArgumentError, ValueError) as e:
            raise SourceError(
                f"{where}: data.source is not a valid database URL ({e})", hint=_URL_HINT
            ) from e
        self.url = url
        self._check_sqlite_file(base_dir)
        backend = url.get_backend_name()
        connect_args = (
            {"connect_timeout": CONNECT_TIMEOUT_S} if backend in _TIMEOUT_BACKENDS else {}
        )
        try:
            self.engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        except sa.exc.NoSuchModuleError as e:
            raise SourceError(
                f"{where}: unknown database scheme {url.drivername!r} in {mask(url)}",
                hint=_URL_HINT + "; a dialect from a plugin must be installed first",
            ) from e
        except ImportError as e:
            module = e.name or str(e)
            package = _PACKAGES.get(module.split(".")[0], module.split(".")[0])
            raise SourceError(
                f"{where}: the driver {module!r} for {url.drivername!r} is not installed "
                f"({mask(url)})",
                hint=f"pip install {package}, or use a driver that is installed "
                "(postgresql:// uses psycopg, which Kiln installs)",
            ) from e
        self._password = url.password if isinstance(url.password, str) else None

    def _check_sqlite_file(self, base_dir: Path) -> None:
        url = self.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return
        if not Path(str(url.database)).is_file():
            raise SourceError(
                f"{self.where}: SQLite file {url.database} does not exist "
                f"(relative paths are resolved against {base_dir})",
                hint="check the path in data.source; sqlite:///file.db is relative to the "
                "folder of kiln.yaml, sqlite:////abs/file.db is absolute",
            )

    def describe(self) -> str:
        return f"database {mask(self.url)}"

    def _masked(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _connect(self) -> Any:
        errors = (sa.exc.SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error, OSError)
        try:
            return self.engine.raw_connection()
        except errors as e:
            reason = self._masked(str(getattr(e, "orig", None) or e))
            raise SourceError(
                f"{self.where}: cannot connect to {mask(self.url)}:\n{indent(reason)}",
                hint="check that the database is running and reachable from this machine, "
                "and the host, port, database name, user and password in data.source",
            ) from e

    def tables(self) -> list[str] | None:
        """Table names of the default schema, or None if they cannot be listed."""
        try:
            return sorted(sa.inspect(self.engine).get_table_names())
        except sa.exc.SQLAlchemyError:
            return None
        except self.engine.dialect.loaded_dbapi.Error:
            return None

    def read(self, query: str | None) -> pa.Table:
        if query is None:
            tables = self.tables()
            found = f" (tables found: {', '.join(tables) or 'none'})" if tables is not None else ""
            example = tables[0] if tables else "my_table"
            raise SourceError(
                f"{self.where}: data.query is needed to read {self.describe()}{found}",
                hint=f"add data.query to kiln.yaml, e.g. `query: SELECT * FROM {example}`",
            )
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        raw = self._connect()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(query)
                if cursor.description is None:
                    raise SourceError(
                        f"{self.query_where}: the query returned no result set from "
                        f"{self.describe()}",
                        hint="data.query must be a SELECT (or another statement that returns rows)",
                    )
                names = [str(d[0]) for d in cursor.description]
                rows = cursor.fetchall()
            finally:
                cursor.close()
        except dbapi_error as e:
            raise sql_error(self.query_where, self.describe(), query, self._masked(str(e))) from e
        finally:
            with contextlib.suppress(dbapi_error):
                raw.rollback()
            raw.close()
        table = self._to_arrow(names, rows)
        return require_rows(table, where=self.query_where, described=self.describe(), query=query)

    def _to_arrow(self, names: list[str], rows: list[Any]) -> pa.Table:
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        arrays = []
        for name, values in zip(names, columns, strict=True):
            try:
                array = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                kinds = sorted({type(v).__name__ for v in values if v is not None})
                raise SourceError(
                    f"{self.query_where}: column {name!r} from {self.describe()} mixes value types "
                    f"({', '.join(kinds)}) and cannot become one column",
                    hint=f"CAST {name} to one type in data.query",
                ) from e
            if pa.types.is_decimal(array.type):
                array = array.cast(pa.float64())
            arrays.append(array)
        return pa.Table.from_arrays(arrays, names=names)
