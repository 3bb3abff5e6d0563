"""The metadata store: an engine, its schema version, and units of work over the repositories."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from kiln.errors import StoreError
from kiln.stores.metadata.base import one_production_violated, second_production
from kiln.stores.metadata.engine import make_engine, masked, unreachable
from kiln.stores.metadata.fires import FireRepository
from kiln.stores.metadata.gates import GateRepository
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

__all__ = ["MetadataStore", "UnitOfWork"]

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class UnitOfWork:
    """The repositories of one transaction, sharing one session.

    Keep a unit of work short (a few statements): on SQLite it holds the database's write lock
    from its first statement to its end, so that reads and the writes they decide are atomic.
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


class MetadataStore:
    """Runs, steps, tasks, versions, audit events and locks in one SQL database.

    Opening a store only connects; the schema is created or migrated by ``upgrade()``
    (``kiln db upgrade``), and ``check_schema()`` says when that is needed.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    def __repr__(self) -> str:
        return f"MetadataStore({masked(self.url)!r})"

    def _alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("path_separator", "os")
        return config

    def upgrade(self, revision: str = "head") -> None:
        config = self._alembic_config()
        try:
            with self.engine.begin() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            raise unreachable(self.url, e) from e

    def downgrade(self, revision: str) -> None:
        """Migrate back to ``revision`` (for repairs and tests; Kiln never does it by itself)."""
        config = self._alembic_config()
        try:
            with self.engine.begin() as conn:
                config.attributes["connection"] = conn
                command.downgrade(config, revision)
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            raise unreachable(self.url, e) from e

    def schema_revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            raise unreachable(self.url, e) from e

    def check_schema(self) -> None:
        script = ScriptDirectory.from_config(self._alembic_config())
        head = script.get_current_head()
        current = self.schema_revision()
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

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        """One transaction: committed when the block exits cleanly, rolled back otherwise."""
        session = Session(self.engine, expire_on_commit=False, autoflush=True)
        try:
            yield UnitOfWork(session)
            session.commit()
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            session.rollback()
            raise unreachable(self.url, e) from e
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
