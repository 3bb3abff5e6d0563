"""Monitor windows: one stored result per (pipeline, window start, window length).

The unique (pipeline, window_start, window_seconds) is what makes two monitors that compute the
same window at once store it once: each inserts in a savepoint, the second insert fails on the
key, and that monitor is told the window was already there (and gets the stored row). A window
is rewritten in place only to add what arrived after it was computed (labels that came later
change its live performance), never duplicated.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from kiln.errors import NotFoundError, StoreError
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import (
    Repository,
    check_aware,
    check_choice,
    insert_ignoring,
    now,
    to_record,
)

__all__ = ["WindowRecord", "WindowRepository", "WindowState"]

WindowState = Literal["ok", "warn", "alert", "no_traffic"]


@dataclass(frozen=True, slots=True)
class WindowRecord:
    id: int
    pipeline: str
    window_start: datetime
    window_end: datetime
    window_seconds: int
    computed_at: datetime
    rows: int
    state: WindowState
    worst: str | None
    summary: dict[str, Any]
    """The window's :meth:`kiln.monitoring.findings.WindowResult.to_dict`."""


class WindowRepository(Repository):
    _table = t.table_of(t.MonitorWindow)

    def store(  # noqa: PLR0917 (one value per column of the window)
        self,
        pipeline: str,
        start: datetime,
        end: datetime,
        seconds: int,
        rows: int,
        state: str,
        worst: str | None,
        summary: dict[str, Any],
    ) -> tuple[WindowRecord, bool]:
        """Store a computed window: ``(record, True)``; or, when another monitor stored the same
        window first, ``(the stored record, False)`` and nothing is written."""
        check_aware("start", start)
        check_aware("end", end)
        check_choice("state", state, t.WINDOW_STATES)
        if seconds <= 0 or end <= start:
            raise ValueError(f"a window needs end > start and seconds > 0, got {start}..{end}")
        values = {
            "pipeline": pipeline,
            "window_start": start,
            "window_end": end,
            "window_seconds": seconds,
            "computed_at": now(),
            "rows": rows,
            "state": state,
            "worst": worst,
            "summary": json_safe(summary),
        }
        # ON CONFLICT DO NOTHING on the window's key: the loser of a race inserts nothing (and
        # no error aborts its PostgreSQL transaction), then reads the winner's row
        key = ["pipeline", "window_start", "window_seconds"]
        stmt = insert_ignoring(self._session, self._table, [values], key)
        row = self._session.execute(stmt.returning(*self._table.c)).one_or_none()
        if row is None:
            there = self.get(pipeline, start, seconds)
            if there is None:
                raise StoreError(
                    f"window {pipeline} {start:%Y-%m-%d %H:%M} was neither stored nor found"
                )
            return there, False
        return to_record(WindowRecord, row), True

    def update(  # noqa: PLR0917 (the columns a recomputation changes)
        self,
        window_id: int,
        rows: int,
        state: str,
        worst: str | None,
        summary: dict[str, Any],
        computed_at: datetime | None = None,
    ) -> WindowRecord:
        """Replace a stored window's result (recomputed because labels arrived after its
        ``computed_at``); the row, its key and its id stay."""
        check_choice("state", state, t.WINDOW_STATES)
        c = self._table.c
        row = self._session.execute(
            sa.update(self._table)
            .where(c.id == window_id)
            .values(
                rows=rows,
                state=state,
                worst=worst,
                summary=json_safe(summary),
                computed_at=computed_at or now(),
            )
            .returning(*self._table.c)
        ).first()
        if row is None:
            raise NotFoundError(
                f"no monitor window {window_id}",
                hint="`kiln monitor PIPELINE` computes and lists the windows",
            )
        return to_record(WindowRecord, row)

    def get(self, pipeline: str, start: datetime, seconds: int) -> WindowRecord | None:
        check_aware("start", start)
        c = self._table.c
        row = self._session.execute(
            sa.select(self._table).where(
                c.pipeline == pipeline, c.window_start == start, c.window_seconds == seconds
            )
        ).first()
        return None if row is None else to_record(WindowRecord, row)

    def latest(self, pipeline: str, seconds: int | None = None) -> WindowRecord | None:
        """The stored window of ``pipeline`` that starts last (of that length, when given)."""
        c = self._table.c
        stmt = sa.select(self._table).where(c.pipeline == pipeline)
        if seconds is not None:
            stmt = stmt.where(c.window_seconds == seconds)
        row = self._session.execute(stmt.order_by(c.window_start.desc(), c.id.desc())).first()
        return None if row is None else to_record(WindowRecord, row)

    def list(
        self,
        pipeline: str,
        since: datetime | None = None,
        limit: int | None = None,
        *,
        seconds: int | None = None,
        until: datetime | None = None,
    ) -> builtins.list[WindowRecord]:
        """Stored windows of ``pipeline`` starting at or after ``since`` (and before
        ``until``), oldest first; with ``limit``, the latest ``limit`` of them."""
        c = self._table.c
        stmt = sa.select(self._table).where(c.pipeline == pipeline)
        if since is not None:
            check_aware("since", since)
            stmt = stmt.where(c.window_start >= since)
        if until is not None:
            check_aware("until", until)
            stmt = stmt.where(c.window_start < until)
        if seconds is not None:
            stmt = stmt.where(c.window_seconds == seconds)
        if limit is not None:
            stmt = stmt.order_by(c.window_start.desc(), c.id.desc()).limit(limit)
            found = [to_record(WindowRecord, r) for r in self._session.execute(stmt)]
            return found[::-1]
        stmt = stmt.order_by(c.window_start, c.id)
        return [to_record(WindowRecord, r) for r in self._session.execute(stmt)]


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as null: PostgreSQL's JSON refuses them, and a figure
    that could not be computed is no figure."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
