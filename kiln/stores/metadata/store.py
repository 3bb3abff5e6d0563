"""The metadata store: an engine, its schema version, and units of work over the repositories."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import ORMExecuteState, Session

from kiln.errors import StoreError
from kiln.stores.metadata.alerts import AlertRepository
from kiln.stores.metadata.base import one_production_violated, second_production
from kiln.stores.metadata.engine import READONLY, SqliteFile, masked, open_engine, unreachable
from kiln.stores.metadata.fires import FireRepository
from kiln.stores.metadata.gates import GateRepository
from kiln.stores.metadata.outbox import OutboxRepository
from kiln.stores.metadata.people import SessionRepository, TokenRepository, UserRepository
from kiln.stores.metadata.repositories import (
    AuditRepository,
    DeploymentRepository,
    LockRepository,
    PipelineRepository,
    RunRepository,
    StepRepository,
    TaskRepository,
    VersionRepository,
)
from kiln.stores.metadata.serving_usage import ServingUsageRepository
from kiln.stores.metadata.storage_usage import StorageUsageRepository
from kiln.stores.metadata.windows import WindowRepository

__all__ = ["MetadataStore", "UnitOfWork"]

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class UnitOfWork:
    """The repositories of one transaction, sharing one session.

    Keep a unit of work short (a few statements): on SQLite a writing one holds the database's
    write lock from its first statement to its end, so that reads and the writes they decide are
    atomic. A read-only one (``MetadataStore.read()``) takes no lock and never waits for a writer.
    """

    def __init__(self, session: Session) -> None:
        self.pipelines = PipelineRepository(session)
        self.runs = RunRepository(session)
        self.steps = StepRepository(session)
        self.tasks = TaskRepository(session)
        self.versions = VersionRepository(session)
        self.audit = AuditRepository(session)
        self.deployments = DeploymentRepository(session)
        self.locks = LockRepository(session)
        self.gates = GateRepository(session)
        self.fires = FireRepository(session)
        self.windows = WindowRepository(session)
        self.alerts = AlertRepository(session)
        self.outbox = OutboxRepository(session)
        self.serving_usage = ServingUsageRepository(session)
        self.storage_usage = StorageUsageRepository(session)
        self.users = UserRepository(session)
        self.tokens = TokenRepository(session)
        self.web_sessions = SessionRepository(session)


class MetadataStore:
    """Runs, steps, tasks, versions, audit events and locks in one SQL database.

    Opening a store only connects; the schema is created or migrated by ``upgrade()``
    (``kiln db upgrade``), and ``check_schema()`` says when that is needed. Only
    ``create=True`` may create a SQLite file: any other open of a missing file is a StoreError.
    """

    def __init__(self, url: str, *, create: bool = False) -> None:
        self.url = url
        self.engine, self._file = open_engine(url, create=create)
        self._retired: list[sa.Engine] = []

    @property
    def path(self) -> Path | None:
        """The SQLite file of this store; None for PostgreSQL."""
        return None if self._file is None else self._file.path

    def replaced(self) -> str | None:
        """Why the SQLite file this store opened is no longer at its path (moved, deleted or
        replaced by another file); None while it is, and for PostgreSQL."""
        return None if self._file is None else self._file.problem()

    def reopen(self) -> None:
        """Open the SQLite file now at the path (never creating it) in place of the one opened
        before, once it is a Kiln database at the current schema.

        The old engine is kept, not disposed: closing its connections would checkpoint into the
        old file and then delete the ``-wal`` file *by name*, which now belongs to the new file.
        """
        engine, file = open_engine(self.url)
        try:
            self._check_schema(engine)
        except BaseException:
            self._keep_or_dispose(engine, file)
            raise
        old, old_file = self.engine, self._file
        self.engine, self._file = engine, file
        self._keep_or_dispose(old, old_file)

    def _keep_or_dispose(self, engine: sa.Engine, file: SqliteFile | None) -> None:
        if file is not None and file.problem() is not None:
            self._retired.append(engine)
        else:
            engine.dispose()

    def __repr__(self) -> str:
        return f"MetadataStore({masked(self.url)!r})"

    def _unreachable(self, error: BaseException) -> StoreError:
        """The error for a failed connection: the moved or replaced file when that is why."""
        if self._file is not None and self._file.problem() is not None:
            try:
                self._file.check()
            except StoreError as replaced:
                return replaced
        return unreachable(self.url, error)

    def _alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("path_separator", "os")
        return config

    def upgrade(self, revision: str = "head") -> None:
        self._migrate(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        """Migrate back to ``revision`` (for repairs and tests; Kiln never does it by itself)."""
        self._migrate(command.downgrade, revision)

    def _migrate(self, step: Any, revision: str) -> None:
        """Run an Alembic command in one transaction. On SQLite the foreign keys are off while
        it runs (a rebuilt table is dropped and renamed back: SQLite's documented way) and
        checked before the commit: a migration that breaks one rolls back."""
        config = self._alembic_config()
        try:
            with self.engine.connect() as conn:
                sqlite = conn.dialect.name == "sqlite"
                if sqlite:  # outside a transaction, where the pragma takes effect
                    conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
                try:
                    with conn.begin():
                        config.attributes["connection"] = conn
                        step(config, revision)
                        if sqlite:
                            _foreign_keys_hold(conn)
                finally:
                    if sqlite:
                        conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            raise self._unreachable(e) from e

    def schema_revision(self) -> str | None:
        return self._schema_revision(self.engine)

    def _schema_revision(self, engine: sa.Engine) -> str | None:
        try:
            with engine.connect() as conn:
                conn.execution_options(**{READONLY: True})
                return MigrationContext.configure(conn).get_current_revision()
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            raise self._unreachable(e) from e

    def check_schema(self) -> None:
        self._check_schema(self.engine)

    def _check_schema(self, engine: sa.Engine) -> None:
        script = ScriptDirectory.from_config(self._alembic_config())
        head = script.get_current_head()
        current = self._schema_revision(engine)
        if current is not None and current not in {r.revision for r in script.walk_revisions()}:
            raise StoreError(
                f"the metadata database at {masked(self.url)} is at schema {current},"
                " which this version of Kiln does not know (a newer Kiln migrated it)",
                hint="upgrade Kiln to the version that the rest of the team uses",
            )
        if current != head:
            raise StoreError(
                f"the metadata database at {masked(self.url)} is not at the current schema"
                f" (it is at {current or 'no schema'}, Kiln needs {head});"
                " run `kiln db upgrade`",
                hint="`kiln db upgrade` creates or migrates the tables; it keeps existing data",
            )

    def read(self) -> AbstractContextManager[UnitOfWork]:
        """A read-only unit of work (see ``unit_of_work``)."""
        return self.unit_of_work(readonly=True)

    @contextmanager
    def unit_of_work(self, *, readonly: bool = False) -> Iterator[UnitOfWork]:
        """One transaction: committed when the block exits cleanly, rolled back otherwise.

        ``readonly=True`` (``read()``): on SQLite a deferred transaction that never waits for a
        writer (write units of work take the write lock at their start); any write in it is a
        StoreError.
        """
        engine = self.engine.execution_options(**{READONLY: True}) if readonly else self.engine
        session = Session(engine, expire_on_commit=False, autoflush=True)
        if readonly:
            event.listen(session, "do_orm_execute", _refuse_writes)
            event.listen(session, "before_flush", _refuse_flush)
        try:
            yield UnitOfWork(session)
            if readonly:
                session.rollback()
            else:
                session.commit()
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            session.rollback()
            raise self._unreachable(e) from e
        except sa_exc.IntegrityError as e:
            session.rollback()
            reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
            if one_production_violated(e):
                raise second_production(reason) from e
            raise StoreError(
                f"the metadata database at {masked(self.url)} rejected a write: {reason}"
            ) from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


_READ_ONLY = "a read-only unit of work cannot write (a bug in Kiln: use unit_of_work())"


def _refuse_writes(state: ORMExecuteState) -> None:
    if not state.is_select:
        raise StoreError(_READ_ONLY)


def _refuse_flush(session: Session, *_: object) -> None:
    if session.new or session.dirty or session.deleted:
        raise StoreError(_READ_ONLY)


def _foreign_keys_hold(conn: sa.Connection) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise StoreError(
            f"the migration left {len(broken)} row(s) referencing missing rows"
            f" (first: table {broken[0][0]}, row {broken[0][1]}); it was rolled back",
            hint="report it: a migration must keep every reference",
        )
