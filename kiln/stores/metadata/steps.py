"""The record of a run's work: its steps and its segment tasks, with their resource usage.

A resumed run starts a step again and trains a failed segment again, replacing its row; the
replaced attempt's usage is appended to the row's ``earlier_attempts`` so that its cost is
still counted (:data:`~kiln.stores.metadata.records.ATTEMPT_FIELDS`).
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Collection
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kiln.errors import NotFoundError
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import (
    Repository,
    check_aware,
    check_choice,
    chunks,
    now,
    to_record,
    upsert,
)
from kiln.stores.metadata.records import (
    ATTEMPT_FIELDS,
    StepRecord,
    StepStatus,
    TaskRecord,
    TaskStatus,
)

__all__ = ["StepRepository", "TaskRepository"]

R = TypeVar("R")


class StepRepository(Repository):
    _table = t.table_of(t.Step)

    def start(self, run_id: str, name: str) -> StepRecord:
        """Start ``name``, or restart it (on resume): its row is reset, keeping its id."""
        reset = {
            "status": "running",
            "started_at": now(),
            "finished_at": None,
            "wall_seconds": None,
            "cpu_seconds": None,
            "peak_memory_bytes": None,
            "details": {},
            "error": None,
        }
        c = self._table.c
        earlier = _earlier_attempts(self._session, self._table, c.run_id == run_id, c.name == name)
        changes = {**reset, "earlier_attempts": earlier}
        values = {"run_id": run_id, "name": name, **changes}
        row = upsert(self._session, self._table, values, ["run_id", "name"], changes)
        return to_record(StepRecord, row)

    def finish(
        self,
        run_id: str,
        name: str,
        status: StepStatus,
        *,
        wall_seconds: float,
        cpu_seconds: float,
        peak_memory_bytes: int,
        details: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> StepRecord:
        check_choice("status", status, t.STEP_STATUSES)
        c = self._table.c
        row = self._session.execute(
            sa.update(self._table)
            .where(c.run_id == run_id, c.name == name)
            .values(
                status=status,
                finished_at=now(),
                wall_seconds=wall_seconds,
                cpu_seconds=cpu_seconds,
                peak_memory_bytes=peak_memory_bytes,
                details=details or {},
                error=error,
            )
            .returning(*self._table.c)
        ).first()
        if row is None:
            raise NotFoundError(f"step {name!r} of run {run_id!r} was never started")
        return to_record(StepRecord, row)

    def for_run(self, run_id: str) -> builtins.list[StepRecord]:
        c = self._table.c
        rows = self._session.execute(
            sa.select(self._table).where(c.run_id == run_id).order_by(c.started_at, c.id)
        )
        return [to_record(StepRecord, row) for row in rows]

    def for_runs(self, run_ids: Collection[str]) -> dict[str, builtins.list[StepRecord]]:
        """The steps of each of ``run_ids`` (as :meth:`for_run` orders them; a run without
        steps is left out), in one query per 500 runs."""
        c = self._table.c
        return _by_run(self._session, self._table, StepRecord, run_ids, c.started_at, c.id)


class TaskRepository(Repository):
    _table = t.table_of(t.Task)

    def record(
        self,
        run_id: str,
        segment: str,
        *,
        status: TaskStatus,
        started_at: datetime,
        finished_at: datetime,
        wall_seconds: float,
        cpu_seconds: float,
        peak_memory_bytes: int,
        base_memory_bytes: int | None = None,
        rows_train: int,
        rows_holdout: int,
        metrics: dict[str, Any],
        artifact_digest: str | None,
        error: str | None,
        log: str,
    ) -> TaskRecord:
        """Record a finished segment; a retried segment replaces its row with ``attempt + 1``."""
        check_choice("status", status, t.TASK_STATUSES)
        check_aware("started_at", started_at)
        check_aware("finished_at", finished_at)
        outcome: dict[str, Any] = {
            "status": status,
            "started_at": started_at,
            "finished_at": finished_at,
            "wall_seconds": wall_seconds,
            "cpu_seconds": cpu_seconds,
            "peak_memory_bytes": peak_memory_bytes,
            "base_memory_bytes": base_memory_bytes,
            "rows_train": rows_train,
            "rows_holdout": rows_holdout,
            "metrics": metrics,
            "artifact_digest": artifact_digest,
            "error": error,
            "log": log,
        }
        c = self._table.c
        earlier = _earlier_attempts(
            self._session, self._table, c.run_id == run_id, c.segment == segment
        )
        outcome["earlier_attempts"] = earlier
        values = {"run_id": run_id, "segment": segment, "attempt": 1, **outcome}
        changes = {**outcome, "attempt": c.attempt + 1}
        row = upsert(self._session, self._table, values, ["run_id", "segment"], changes)
        return to_record(TaskRecord, row)

    def for_run(self, run_id: str) -> builtins.list[TaskRecord]:
        c = self._table.c
        rows = self._session.execute(
            sa.select(self._table).where(c.run_id == run_id).order_by(c.segment)
        )
        return [to_record(TaskRecord, row) for row in rows]

    def for_runs(self, run_ids: Collection[str]) -> dict[str, builtins.list[TaskRecord]]:
        """The tasks of each of ``run_ids`` (as :meth:`for_run` orders them; a run without
        tasks is left out), in one query per 500 runs."""
        return _by_run(self._session, self._table, TaskRecord, run_ids, self._table.c.segment)

    def page(self, run_id: str, *, limit: int, offset: int = 0) -> builtins.list[TaskRecord]:
        """``limit`` tasks of the run, failed first, then the slowest (a page of a run of
        thousands of tasks, for the UI). The order is found on the narrow columns first, so
        that only the page's rows (and their logs) are read whole."""
        c = self._table.c
        failed_first = sa.case((c.status == "failed", 0), else_=1)
        order = (failed_first, c.wall_seconds.desc(), c.segment)
        ids = [
            i
            for (i,) in self._session.execute(
                sa.select(c.id)
                .where(c.run_id == run_id)
                .order_by(*order)
                .limit(limit)
                .offset(offset)
            )
        ]
        if not ids:
            return []
        rows = self._session.execute(sa.select(self._table).where(c.id.in_(ids)).order_by(*order))
        return [to_record(TaskRecord, row) for row in rows]

    def counts(self, run_id: str) -> dict[str, int]:
        """The run's tasks per status."""
        c = self._table.c
        rows = self._session.execute(
            sa.select(c.status, sa.func.count()).where(c.run_id == run_id).group_by(c.status)
        )
        return {str(status): int(n) for status, n in rows}

    def spans(
        self, run_id: str, *, most: int | None = None, total: int | None = None
    ) -> builtins.list[tuple[str, str, datetime, datetime]]:
        """(segment, status, started_at, finished_at) of the run's tasks, by start: the
        fan-out's timeline without the logs and metrics. ``most``: past that many tasks (the
        run's ``total``, counted when not given), every failed one and about ``most`` others
        (every k-th by id: a run's tasks are numbered as they finish), at most ``2 * most``."""
        c = self._table.c
        stmt = sa.select(c.segment, c.status, c.started_at, c.finished_at).where(c.run_id == run_id)
        if most is not None:
            if total is None:
                total = sum(self.counts(run_id).values())
            if total > most:
                every = -(-total // most)
                stmt = stmt.where(sa.or_(c.status == "failed", c.id % every == 0)).limit(2 * most)
        rows = self._session.execute(stmt.order_by(c.started_at, c.id))
        return [(r.segment, r.status, r.started_at, r.finished_at) for r in rows]

    def get(self, run_id: str, segment: str) -> TaskRecord:
        c = self._table.c
        row = self._session.execute(
            sa.select(self._table).where(c.run_id == run_id, c.segment == segment)
        ).first()
        if row is None:
            raise NotFoundError(
                f"run {run_id!r} has no task for segment {segment!r}",
                hint="the run page lists its tasks",
            )
        return to_record(TaskRecord, row)

    def succeeded(self, run_id: str) -> dict[str, TaskRecord]:
        return {task.segment: task for task in self.for_run(run_id) if task.status == "succeeded"}


def _by_run(
    session: Session,
    table: sa.Table,
    record: type[R],
    run_ids: Collection[str],
    *order: sa.ColumnElement[Any],
) -> dict[str, builtins.list[R]]:
    """The rows of ``table`` of each of ``run_ids`` as ``record``, by ``order``, in one query
    per 500 runs."""
    found: dict[str, builtins.list[R]] = defaultdict(list)
    for ids in chunks(run_ids):
        rows = session.execute(sa.select(table).where(table.c.run_id.in_(ids)).order_by(*order))
        for row in rows:
            found[row.run_id].append(to_record(record, row))
    return dict(found)


def _earlier_attempts(
    session: Session, table: sa.Table, *where: sa.ColumnElement[bool]
) -> builtins.list[dict[str, Any]] | None:
    """The row's earlier attempts with the attempt about to be replaced appended (None: no
    row yet). The row is locked until the unit of work ends, so that the replacement that
    follows cannot lose an attempt recorded meanwhile."""
    row = session.execute(sa.select(table).where(*where).with_for_update()).first()
    if row is None:
        return None
    attempt = {name: _jsonable(getattr(row, name)) for name in ATTEMPT_FIELDS if name in table.c}
    return [*(row.earlier_attempts or []), attempt]


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
