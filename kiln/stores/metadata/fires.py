"""Schedule firings: one row per (pipeline, due time), claimed by exactly one scheduler.

The unique (pipeline, due_at) pair is the claim: a scheduler claims a firing by inserting its
row, and a second scheduler's insert of the same firing fails and is told so. Every later
change of hands (a retry, a takeover from a scheduler that died) is an UPDATE conditional on
the state that was read, so two schedulers racing for it cannot both win.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kiln.errors import NotFoundError
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import Repository, check_aware, check_choice, to_record
from kiln.stores.metadata.base import now as _now
from kiln.stores.metadata.records import FireRecord, FireStatus

__all__ = ["FireRepository"]

_ENDINGS = ("succeeded", "blocked", "retrying", "failed")


class FireRepository(Repository):
    _table = t.table_of(t.ScheduleFire)

    def claim(
        self,
        pipeline: str,
        due_at: datetime,
        config_path: str,
        scheduler: str,
        *,
        trigger: str | None = None,
        alert_id: int | None = None,
    ) -> FireRecord | None:
        """Claim the firing of ``pipeline`` due at ``due_at`` as attempt 1; None when another
        scheduler claimed it (or recorded it as skipped) first. ``trigger`` and ``alert_id``
        (a retraining) are kept on the row, so a retry or a takeover runs the same command."""
        return self._insert(
            pipeline, due_at, config_path, scheduler, "running", None, (trigger, alert_id)
        )

    def skip(
        self, pipeline: str, due_at: datetime, config_path: str, scheduler: str, reason: str
    ) -> FireRecord | None:
        """Record that the firing due at ``due_at`` was not run (catch-up policy ``skip``);
        None when another scheduler recorded or claimed it first."""
        return self._insert(pipeline, due_at, config_path, scheduler, "skipped", reason)

    def _insert(  # noqa: PLR0917 (private helper of claim and skip)
        self,
        pipeline: str,
        due_at: datetime,
        config_path: str,
        scheduler: str,
        status: FireStatus,
        error: str | None,
        runs: tuple[str | None, int | None] = (None, None),
    ) -> FireRecord | None:
        check_aware("due_at", due_at)
        stamp = _now()
        values = {
            "pipeline": pipeline,
            "due_at": due_at,
            "config_path": config_path,
            "scheduler": scheduler,
            "status": status,
            "attempt": 1,
            "claimed_at": stamp,
            "heartbeat_at": stamp,
            "finished_at": stamp if status == "skipped" else None,
            "error": error,
            "trigger": runs[0],
            "alert_id": runs[1],
        }
        try:
            # A savepoint, so that the loser's duplicate key does not abort a PostgreSQL
            # transaction.
            with self._session.begin_nested():
                row = self._session.execute(
                    sa.insert(self._table).values(**values).returning(*self._table.c)
                ).one()
        except sa_exc.IntegrityError:
            return None
        return to_record(FireRecord, row)

    def claim_retry(
        self, fire_id: int, attempt: int, scheduler: str, now: datetime
    ) -> FireRecord | None:
        """Take a firing that waits for its retry as attempt ``attempt + 1``: only when it is
        still ``retrying`` at ``attempt`` and its retry time has come (else None)."""
        check_aware("now", now)
        c = self._table.c
        stamp = _now()
        return self._cas(
            sa.update(self._table)
            .where(
                c.id == fire_id,
                c.status == "retrying",
                c.attempt == attempt,
                c.next_retry_at <= now,
            )
            .values(
                status="running",
                attempt=c.attempt + 1,
                scheduler=scheduler,
                claimed_at=stamp,
                heartbeat_at=stamp,
                finished_at=None,
                next_retry_at=None,
            )
        )

    def take_over_stale(
        self, fire_id: int, heartbeat_at: datetime, scheduler: str
    ) -> FireRecord | None:
        """Take a ``running`` firing whose scheduler stopped heartbeating: only when its
        heartbeat is still the one judged stale (else None, another scheduler was faster).
        The firing stays ``running`` at the same attempt; the caller decides what follows."""
        c = self._table.c
        return self._cas(
            sa.update(self._table)
            .where(c.id == fire_id, c.status == "running", c.heartbeat_at == heartbeat_at)
            .values(scheduler=scheduler, heartbeat_at=_now())
        )

    def heartbeat(self, fire_id: int, scheduler: str) -> bool:
        """Prove the firing's scheduler is alive; False when the firing is no longer its own."""
        c = self._table.c
        return (
            self._cas(
                sa.update(self._table)
                .where(c.id == fire_id, c.status == "running", c.scheduler == scheduler)
                .values(heartbeat_at=_now())
            )
            is not None
        )

    def finish(
        self,
        fire_id: int,
        status: FireStatus,
        run_id: str | None = None,
        error: str | None = None,
        next_retry_at: datetime | None = None,
        *,
        scheduler: str | None = None,
    ) -> FireRecord | None:
        """End the firing's attempt: ``succeeded``, ``blocked`` (the run registered a version
        that its gates blocked: an outcome, never retried), ``failed``, or ``retrying`` at
        ``next_retry_at``. With ``scheduler``, only while that scheduler holds the running
        firing (None when it lost it); without, the firing must exist."""
        if status not in _ENDINGS:
            check_choice("status", status, _ENDINGS)
        if (status == "retrying") != (next_retry_at is not None):
            raise ValueError("a retrying firing needs next_retry_at, and only a retrying one")
        if next_retry_at is not None:
            check_aware("next_retry_at", next_retry_at)
        c = self._table.c
        stmt = sa.update(self._table).where(c.id == fire_id)
        if scheduler is not None:
            stmt = stmt.where(c.status == "running", c.scheduler == scheduler)
        found = self._cas(
            stmt.values(
                status=status,
                run_id=run_id,
                error=error,
                next_retry_at=next_retry_at,
                finished_at=_now(),
            )
        )
        if found is None and scheduler is None:
            raise _no_fire(fire_id)
        return found

    def get(self, fire_id: int) -> FireRecord:
        row = self._session.execute(sa.select(self._table).where(self._table.c.id == fire_id))
        found = row.first()
        if found is None:
            raise _no_fire(fire_id)
        return to_record(FireRecord, found)

    def last_due(self, pipeline: str) -> datetime | None:
        """The latest due time of the pipeline's firings, whatever their status."""
        c = self._table.c
        latest: datetime | None = self._session.scalar(
            sa.select(sa.func.max(c.due_at)).where(c.pipeline == pipeline)
        )
        return latest

    def serialize(self, pipeline: str) -> None:
        """Hold the pipeline's scheduling lock until this unit of work ends, so that checking
        for a running firing and claiming the next one are one step across schedulers. SQLite
        units of work hold the database's write lock already; PostgreSQL takes a
        transaction-scoped advisory lock on the pipeline's name."""
        if self._session.get_bind().dialect.name == "postgresql":
            self._session.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                {"key": f"kiln.schedule:{pipeline}"},
            )
        else:  # the first statement starts the (BEGIN IMMEDIATE) transaction
            self._session.execute(sa.text("SELECT 1"))

    def retrains_since(self, pipeline: str, since: datetime) -> builtins.list[FireRecord]:
        """The pipeline's retraining firings (those with a trigger: claimed for an alert) due
        since ``since`` and not skipped, oldest first."""
        check_aware("since", since)
        c = self._table.c
        return self._select(
            (c.pipeline == pipeline)
            & (c.status != "skipped")
            & (c.due_at >= since)
            & c.trigger.is_not(None),
            c.due_at,
        )

    def decided(self, pipeline: str, due_ats: builtins.list[datetime]) -> set[datetime]:
        """Which of ``due_ats`` already have a firing of ``pipeline`` (whatever its status)."""
        if not due_ats:
            return set()
        c = self._table.c
        found = self._session.scalars(
            sa.select(c.due_at).where(c.pipeline == pipeline, c.due_at.in_(due_ats))
        )
        return set(found)

    def running(self, pipeline: str) -> builtins.list[FireRecord]:
        """The pipeline's firings that are ``running`` now, oldest first."""
        c = self._table.c
        return self._select((c.pipeline == pipeline) & (c.status == "running"), c.due_at)

    def due_retries(self, now: datetime) -> builtins.list[FireRecord]:
        """Firings waiting for a retry whose time has come, oldest retry time first."""
        check_aware("now", now)
        c = self._table.c
        return self._select((c.status == "retrying") & (c.next_retry_at <= now), c.next_retry_at)

    def stale_running(self, older_than: datetime) -> builtins.list[FireRecord]:
        """``running`` firings whose last heartbeat is older than ``older_than``."""
        check_aware("older_than", older_than)
        c = self._table.c
        return self._select((c.status == "running") & (c.heartbeat_at < older_than), c.due_at)

    def list(self, pipeline: str | None = None, limit: int = 50) -> builtins.list[FireRecord]:
        """The latest firings, newest due time first."""
        c = self._table.c
        stmt = sa.select(self._table).order_by(c.due_at.desc(), c.id.desc()).limit(limit)
        if pipeline is not None:
            stmt = stmt.where(c.pipeline == pipeline)
        return [to_record(FireRecord, row) for row in self._session.execute(stmt)]

    def _select(self, where: Any, order: Any) -> builtins.list[FireRecord]:
        rows = self._session.execute(
            sa.select(self._table).where(where).order_by(order, self._table.c.id)
        )
        return [to_record(FireRecord, row) for row in rows]

    def _cas(self, stmt: Any) -> FireRecord | None:
        row = self._session.execute(stmt.returning(*self._table.c)).first()
        return None if row is None else to_record(FireRecord, row)


def _no_fire(fire_id: int) -> NotFoundError:
    return NotFoundError(
        f"no schedule firing {fire_id}", hint="`kiln status` shows the scheduled pipelines"
    )
