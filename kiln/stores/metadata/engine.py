"""Engines for the metadata database: SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from kiln.errors import StoreError

__all__ = ["make_engine", "masked", "unreachable"]

_HINT = "set KILN_DB_URL (or --db) to a reachable database, or start the database server"


def masked(url: str | sa.URL) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "<invalid URL>"


def unreachable(url: str | sa.URL, error: BaseException) -> StoreError:
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = lines[0] if lines else type(error).__name__
    return StoreError(f"cannot reach the metadata database at {masked(url)}: {reason}", hint=_HINT)


def _normalize(url: str) -> sa.URL:
    try:
        parsed = sa.make_url(url)
    except sa_exc.ArgumentError as e:
        raise StoreError(
            f"invalid metadata database URL: {e}",
            hint="use sqlite:///path/to/kiln.db or postgresql://user@host:5432/dbname",
        ) from e
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Hand transaction control to SQLAlchemy (see _sqlite_begin); pysqlite's own is broken.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    """Take the write lock at BEGIN.

    A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when another
    process committed in between (busy_timeout does not apply), which would break version
    allocation; BEGIN IMMEDIATE serializes writers instead, waiting up to busy_timeout.
    """
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; connects once so that an unreachable database fails here."""
    parsed = _normalize(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise unreachable(url, e) from e
        engine = sa.create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    elif backend == "postgresql":
        engine = sa.create_engine(parsed, connect_args={"connect_timeout": 5}, pool_pre_ping=True)
    else:
        raise StoreError(
            f"unsupported metadata database {masked(url)}: Kiln supports SQLite and PostgreSQL",
            hint="use sqlite:///path/to/kiln.db or postgresql://user@host:5432/dbname",
        )
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        engine.dispose()
        raise unreachable(url, e) from e
    return engine
