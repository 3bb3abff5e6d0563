"""Engines for the metadata database: SQLite (embedded default) and PostgreSQL.

A SQLite file is created only by an explicit ``create=True`` open (``kiln db upgrade``, ``kiln
run``, the scheduler); every other open uses SQLite's ``mode=rw`` URI, so a missing file is an
error and never a new empty database (whose connection, on close, would delete the ``-wal`` and
``-shm`` files that another process still uses). The file's identity (device, inode) is recorded
at open and checked at the start of every transaction: a file moved, deleted or replaced under
a running process refuses the transaction instead of writing into a WAL nobody will read.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from kiln.errors import StoreError

__all__ = ["READONLY", "SqliteFile", "make_engine", "masked", "open_engine", "unreachable"]

READONLY = "kiln_readonly"
"""The execution option of a read-only transaction: a deferred BEGIN on SQLite."""

_HINT = "set KILN_DB_URL (or --db) to a reachable database, or start the database server"
_BUSY_HINT = (
    "retry when it has finished (a write holds the lock for a few statements at most);"
    " teams whose runs and servers write at the same time from many machines can put the"
    " registry on PostgreSQL (KILN_DB_URL)"
)


def masked(url: str | sa.URL) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "<invalid URL>"


def unreachable(url: str | sa.URL, error: BaseException) -> StoreError:
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = lines[0] if lines else type(error).__name__
    path = sqlite_path(url)
    if path is not None and "database is locked" in reason:
        return StoreError(
            f"the metadata database {path} is busy: another Kiln process holds the write lock"
            " on it (e.g. a run registering a version, a promotion)",
            hint=_BUSY_HINT,
        )
    if path is not None and "not a database" in reason:
        return StoreError(
            f"the metadata database {path} is not a SQLite database ({reason})",
            hint="point KILN_HOME, or --db / KILN_DB_URL, at Kiln's database file",
        )
    return StoreError(f"cannot reach the metadata database at {masked(url)}: {reason}", hint=_HINT)


def missing_file(path: Path) -> StoreError:
    return StoreError(
        f"the metadata database {path} does not exist",
        hint="`kiln db upgrade` creates it (so does `kiln run`); if it should exist, check"
        " KILN_HOME, or --db / KILN_DB_URL",
    )


def _normalize(url: str | sa.URL) -> sa.URL:
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


def sqlite_path(url: str | sa.URL) -> Path | None:
    """The file of a SQLite URL (absolute); None for other databases, memory and URI forms."""
    try:
        parsed = sa.make_url(url)
    except sa_exc.ArgumentError:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None
    return Path(database).absolute()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


@dataclass
class SqliteFile:
    """The file an engine opened and its identity (device, inode) at that time."""

    path: Path
    identity: tuple[int, int] | None = None

    def problem(self) -> str | None:
        """Why the file at ``path`` is no longer the one opened; None while it is."""
        now = _identity(self.path)
        if now is None:
            return f"the metadata database {self.path} is missing (moved or deleted)"
        if now != self.identity:
            return f"the metadata database {self.path} was replaced by another file"
        return None

    def check(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise StoreError(
                f"{problem}: this process opened it earlier and refuses to read or write the"
                " file it had, which was moved, deleted or replaced",
                hint="put the file back (with its -wal and -shm files); a server follows the"
                " file at that path again once it is back; restart other processes",
            )


_OPENED = "kiln_file_identity"
"""Key of a pooled connection's ``info``: the identity of the file it opened."""


def _connect(file: SqliteFile | None) -> Any:
    def connect(dbapi_connection: Any, record: Any) -> None:
        if file is not None:  # a pooled connection keeps the file it opened, whatever the path
            record.info[_OPENED] = _identity(file.path)
        _sqlite_pragmas(dbapi_connection)

    return connect


def _sqlite_pragmas(dbapi_connection: Any) -> None:
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


def _begin(file: SqliteFile | None) -> Any:
    def begin(conn: sa.Connection) -> None:
        """Take the write lock at BEGIN, except in read-only transactions.

        A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
        another process committed in between (busy_timeout does not apply), which would break
        version allocation; BEGIN IMMEDIATE serializes writers instead, waiting up to
        busy_timeout. A read-only transaction (``READONLY``) begins deferred: under WAL it
        reads a snapshot and never waits for a writer.
        """
        readonly = conn.get_execution_options().get(READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
        if file is None:
            return
        if file.problem() is not None:
            conn.exec_driver_sql("ROLLBACK")
            file.check()
        if conn.connection.info.get(_OPENED, file.identity) != file.identity:
            # This pooled connection opened another file while that one was at the path (the
            # file was replaced, then put back): never read or commit there again.
            conn.exec_driver_sql("ROLLBACK")
            conn.invalidate()
            raise StoreError(
                f"a connection to the metadata database {file.path} opened another file while"
                " it was replaced; it was dropped",
                hint="retry: the next connection opens the file now at the path",
            )

    return begin


def open_engine(url: str, *, create: bool = False) -> tuple[sa.Engine, SqliteFile | None]:
    """An engine for ``url`` and, for a SQLite file, the file it opened; connects once so that
    an unreachable database fails here. Only ``create=True`` may create a SQLite file."""
    parsed = _normalize(url)
    backend = parsed.get_backend_name()
    file: SqliteFile | None = None
    if backend == "sqlite":
        path = sqlite_path(parsed)
        if path is not None:
            file = SqliteFile(path)
            if create:
                _create_file(url, path)
            elif not path.exists():
                raise missing_file(path)
            # Every connection, of every engine, opens the file read/write without creating it:
            # a connection made while the file is away must fail, not create an empty one.
            query = {**parsed.query, "mode": "rw", "uri": "true"}
            parsed = parsed.set(database=f"file:{quote(str(path))}", query=query)
        engine = sa.create_engine(parsed)
        event.listen(engine, "connect", _connect(file))
        event.listen(engine, "begin", _begin(file))
    elif backend == "postgresql":
        engine = sa.create_engine(parsed, connect_args={"connect_timeout": 5}, pool_pre_ping=True)
    else:
        raise StoreError(
            f"unsupported metadata database {masked(url)}: Kiln supports SQLite and PostgreSQL",
            hint="use sqlite:///path/to/kiln.db or postgresql://user@host:5432/dbname",
        )
    try:
        with engine.connect() as conn:
            if file is not None:
                file.identity = _identity(file.path)
            conn.execution_options(**{READONLY: True}).exec_driver_sql("SELECT 1")
    except sa_exc.DBAPIError as e:  # unreachable, locked, or not a database at all
        engine.dispose()
        if file is not None and not file.path.exists():
            raise missing_file(file.path) from e
        raise unreachable(url, e) from e
    return engine, file


def _create_file(url: str | sa.URL, path: Path) -> None:
    """Create an empty SQLite file at ``path`` unless one is there (the explicit create of
    ``kiln db upgrade``, ``kiln run`` and ``kiln scheduler``)."""
    if path.exists():
        return
    stray = [p.name for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
    if stray:  # its database was moved away: a new file here would delete that live WAL
        raise StoreError(
            f"the metadata database {path} does not exist but its {' and '.join(stray)} do:"
            " the database was moved or deleted while a process had it open; Kiln creates no"
            " new database beside them",
            hint="put the database back at that path, or move the -wal and -shm files with it",
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sqlite3.connect(path).close()
    except (OSError, sqlite3.Error) as e:
        raise unreachable(url, e) from e


def make_engine(url: str, *, create: bool = False) -> sa.Engine:
    """An engine for ``url`` (see ``open_engine``)."""
    return open_engine(url, create=create)[0]
