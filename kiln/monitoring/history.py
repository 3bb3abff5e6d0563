"""The stored monitoring history of a pipeline, typed: its computed windows (each with the whole
:class:`WindowResult`) and its alert episodes with the runs they started.

The report reads it, and the UI of a later issue will show the same data, so the query lives
here once rather than in a command. It reads the ``monitor_windows``, ``alerts`` and ``runs``
tables with SQLAlchemy Core in one read-only transaction (a deferred BEGIN on SQLite: it never
waits for a monitor that is writing a window).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kiln.errors import NotFoundError
from kiln.monitoring.findings import WindowResult
from kiln.stores import MetadataStore
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.engine import READONLY, masked, unreachable

__all__ = ["AlertEpisode", "MonitorHistory", "RetrainRun", "StoredWindow", "load_history"]


@dataclass(frozen=True)
class StoredWindow:
    """One row of ``monitor_windows``: when it was computed, its state, and what it found."""

    start: datetime
    end: datetime
    seconds: int
    computed_at: datetime
    rows: int
    state: str
    worst: str | None
    result: WindowResult


@dataclass(frozen=True)
class RetrainRun:
    """A run an alert started (``runs.alert_id``), and the version it registered, if any."""

    id: str
    trigger: str
    status: str
    started_at: datetime
    model_version: int | None


@dataclass(frozen=True)
class AlertEpisode:
    id: int
    check: str
    kind: str
    level: str
    status: str
    streak: int
    first_window: datetime
    last_window: datetime
    opened_at: datetime | None
    resolved_at: datetime | None
    value: float | None
    threshold: float | None
    message: str
    notified_at: datetime | None
    acked_by: str | None
    acked_at: datetime | None
    ack_note: str | None
    runs: list[RetrainRun] = field(default_factory=list)


@dataclass(frozen=True)
class MonitorHistory:
    pipeline: str
    windows: list[StoredWindow]
    """Oldest first, all of one length (``window_seconds``)."""
    alerts: list[AlertEpisode]
    """Oldest first by the first window they cover."""
    window_seconds: int | None
    other_lengths: dict[int, int] = field(default_factory=dict)
    """Windows of other lengths left out (seconds -> count): a pipeline whose ``monitor.window``
    changed has windows of both lengths, and their figures do not share a time axis."""


def load_history(
    metadata: MetadataStore,
    pipeline: str,
    *,
    since: datetime | None = None,
    window_seconds: int | None = None,
) -> MonitorHistory:
    """The windows (starting at or after ``since``) and alert episodes (still live, or with a
    window at or after ``since``) of ``pipeline``. ``window_seconds``: the window length to show
    (default: that of the most recently computed window).

    NotFoundError when the store knows neither the pipeline nor any window of it."""
    engine = metadata.engine.execution_options(**{READONLY: True})
    try:
        with engine.connect() as conn, conn.begin():
            windows = _windows(conn, pipeline, since)
            alerts = _alerts(conn, pipeline, since)
            known = conn.scalar(sa.select(t.Pipeline.name).where(t.Pipeline.name == pipeline))
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise unreachable(metadata.url, e) from e
    if known is None and not windows and not alerts:
        raise NotFoundError(
            f"no pipeline {pipeline!r} in the metadata store at {masked(metadata.url)}",
            hint="`kiln status` lists the pipelines; check the name and --home / KILN_DB_URL",
        )
    lengths = Counter(w.seconds for w in windows)
    if window_seconds is None and windows:
        window_seconds = max(windows, key=lambda w: w.computed_at).seconds
    shown = [w for w in windows if w.seconds == window_seconds]
    lengths.pop(window_seconds or 0, None)
    return MonitorHistory(pipeline, shown, alerts, window_seconds, dict(lengths))


def _windows(conn: sa.Connection, pipeline: str, since: datetime | None) -> list[StoredWindow]:
    w = t.table_of(t.MonitorWindow)
    query = sa.select(w).where(w.c.pipeline == pipeline).order_by(w.c.window_start, w.c.id)
    if since is not None:
        query = query.where(w.c.window_start >= since)
    return [
        StoredWindow(
            start=row.window_start,
            end=row.window_end,
            seconds=row.window_seconds,
            computed_at=row.computed_at,
            rows=row.rows,
            state=row.state,
            worst=row.worst,
            result=WindowResult.from_dict(_summary(row.summary)),
        )
        for row in conn.execute(query)
    ]


def _summary(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):  # a JSON column read back as text by an old driver
        import json

        doc = json.loads(doc)
    return doc


def _alerts(conn: sa.Connection, pipeline: str, since: datetime | None) -> list[AlertEpisode]:
    a = t.table_of(t.Alert)
    r = t.table_of(t.Run)
    query = sa.select(a).where(a.c.pipeline == pipeline).order_by(a.c.first_window, a.c.id)
    if since is not None:
        query = query.where(sa.or_(a.c.last_window >= since, a.c.status != "resolved"))
    episodes = list(conn.execute(query))
    runs: dict[int, list[RetrainRun]] = {}
    ids = [e.id for e in episodes]
    if ids:
        started = (
            sa.select(r.c.id, r.c.trigger, r.c.status, r.c.started_at, r.c.model_version,
                      r.c.alert_id)
            .where(r.c.alert_id.in_(ids))
            .order_by(r.c.started_at)
        )  # fmt: skip
        for run in conn.execute(started):
            runs.setdefault(run.alert_id, []).append(
                RetrainRun(run.id, run.trigger, run.status, run.started_at, run.model_version)
            )
    return [
        AlertEpisode(
            id=e.id,
            check=e.check,
            kind=e.kind,
            level=e.level,
            status=e.status,
            streak=e.streak,
            first_window=e.first_window,
            last_window=e.last_window,
            opened_at=e.opened_at,
            resolved_at=e.resolved_at,
            value=e.value,
            threshold=e.threshold,
            message=e.message,
            notified_at=e.notified_at,
            acked_by=e.acked_by,
            acked_at=e.acked_at,
            ack_note=e.ack_note,
            runs=runs.get(e.id, []),
        )
        for e in episodes
    ]
