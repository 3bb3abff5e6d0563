"""The monitoring page's rows of one pipeline: its newest monitor windows and its alert episodes
(live ones first, then the most recent resolved ones), bounded, in one read-only transaction.

A window's stored document (``summary``: ``kiln.monitoring.findings.WindowResult.to_dict``) is
mostly drift rows; decoding 200 of them costs more than the page's whole budget. So the query
asks the database for the parts a chart over time draws (performance, latency, traffic:
``summary['performance']`` etc., JSON_EXTRACT on SQLite, ``->`` on PostgreSQL) and for the
drift rows of the newest few windows only (the heatmap's). The parts are returned as stored
dicts: the registry sits below monitoring, so the UI types them (``kiln.ui.monitoring``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kiln.errors import NotFoundError
from kiln.stores import MetadataStore
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.alerts import AlertRecord
from kiln.stores.metadata.base import to_record
from kiln.stores.metadata.engine import READONLY, masked, unreachable
from kiln.stores.metadata.records import PipelineRecord

__all__ = ["HEATMAP_LOOKBACK", "MAX_WINDOWS", "MonitoringRows", "WindowRow", "monitoring_rows"]

MAX_WINDOWS = 200
"""The most windows a page reads (the newest ones of the newest window's length)."""
HEATMAP_LOOKBACK = 10
"""The newest windows whose drift rows are read (the heatmap shows the newest with any)."""
LIVE_ALERTS = 100
RECENT_ALERTS = 25


@dataclass(frozen=True)
class WindowRow:
    """One stored window with the parts of its document that the charts read."""

    start: datetime
    end: datetime
    computed_at: datetime
    rows: int
    state: str
    worst: str | None
    performance: list[dict[str, Any]]
    latency: list[dict[str, Any]]
    traffic: list[dict[str, Any]]
    drift: list[dict[str, Any]] | None
    """Read for the newest :data:`HEATMAP_LOOKBACK` windows only (None for the others)."""


@dataclass(frozen=True)
class MonitoringRows:
    pipeline: PipelineRecord
    windows: list[WindowRow]
    """The newest ``limit`` windows, oldest first, all of the length of the newest window."""
    window_seconds: int | None
    """The length shown (None: no window stored yet)."""
    more_windows: bool
    """Older windows of that length exist beyond the ``limit`` shown."""
    alerts: list[AlertRecord]
    """Open, then pending episodes (latest window first), then the most recent resolved ones."""


def monitoring_rows(
    metadata: MetadataStore,
    pipeline: str,
    *,
    limit: int = MAX_WINDOWS,
    resolved: int = RECENT_ALERTS,
) -> MonitoringRows:
    """The newest ``limit`` windows and the alert episodes of ``pipeline``; NotFoundError (404)
    for a pipeline the registry does not know. Five indexed queries, however many windows or
    episodes the pipeline has stored."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    engine = metadata.engine.execution_options(**{READONLY: True})
    try:
        with engine.connect() as conn, conn.begin():
            found = conn.execute(sa.select(t.table_of(t.Pipeline)).where(
                t.Pipeline.name == pipeline)).first()  # fmt: skip
            if found is None:
                raise NotFoundError(
                    f"no pipeline {pipeline!r} in the registry at {masked(metadata.url)}",
                    hint="the catalogue (/) lists every pipeline; check the name",
                )
            seconds, windows = _windows(conn, pipeline, limit)
            alerts = _alerts(conn, pipeline, resolved)
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise unreachable(metadata.url, e) from e
    more = len(windows) > limit
    shown = windows[:limit][::-1]
    return MonitoringRows(to_record(PipelineRecord, found), shown, seconds, more, alerts)


def _windows(conn: sa.Connection, pipeline: str, limit: int) -> tuple[int | None, list[WindowRow]]:
    """The newest ``limit + 1`` windows, newest first (one more: are there older ones?)."""
    w = t.table_of(t.MonitorWindow)
    newest = sa.select(w.c.window_seconds).where(w.c.pipeline == pipeline)
    seconds = conn.scalar(newest.order_by(w.c.window_start.desc(), w.c.id.desc()).limit(1))
    if seconds is None:
        return None, []
    summary = w.c.summary
    parts = (summary["performance"], summary["latency"], summary["traffic"])
    base = (w.c.window_start, w.c.window_end, w.c.computed_at, w.c.rows, w.c.state, w.c.worst)
    query = (
        sa.select(w.c.id, *base, *parts)
        .where(w.c.pipeline == pipeline, w.c.window_seconds == seconds)
        .order_by(w.c.window_start.desc(), w.c.id.desc())
        .limit(limit + 1)
    )
    found = list(conn.execute(query))
    recent = [row.id for row in found[:HEATMAP_LOOKBACK]]
    drift = dict(conn.execute(sa.select(w.c.id, summary["drift"]).where(w.c.id.in_(recent)))
                 .all()) if recent else {}  # fmt: skip
    return seconds, [
        WindowRow(
            start=row[1],
            end=row[2],
            computed_at=row[3],
            rows=row[4],
            state=row[5],
            worst=row[6],
            performance=row[7] or [],
            latency=row[8] or [],
            traffic=row[9] or [],
            drift=(drift.get(row.id) or []) if row.id in drift else None,
        )
        for row in found
    ]


def _alerts(conn: sa.Connection, pipeline: str, resolved: int) -> list[AlertRecord]:
    a = t.table_of(t.Alert)
    newest = (a.c.last_window.desc(), a.c.id.desc())
    live = conn.execute(
        sa.select(a).where(a.c.pipeline == pipeline, a.c.status.in_(("open", "pending")))
        .order_by(*newest).limit(LIVE_ALERTS)
    )  # fmt: skip
    done = conn.execute(
        sa.select(a).where(a.c.pipeline == pipeline, a.c.status == "resolved")
        .order_by(*newest).limit(resolved)
    )  # fmt: skip
    first = sorted((to_record(AlertRecord, r) for r in live), key=lambda x: x.status != "open")
    return first + [to_record(AlertRecord, r) for r in done]
