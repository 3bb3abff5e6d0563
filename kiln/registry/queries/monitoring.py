"""The monitoring page's rows of one pipeline: its newest monitor windows and its alert episodes
(live ones first, then the most recent resolved ones), bounded, in one read unit of work.

The windows are returned as stored (their ``summary`` is the window's
``kiln.monitoring.findings.WindowResult.to_dict``): the registry sits below monitoring, so the
UI turns them into typed results and figures (``kiln.ui.api.monitoring``).
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.stores import MetadataStore
from kiln.stores.metadata.alerts import AlertRecord
from kiln.stores.metadata.records import PipelineRecord
from kiln.stores.metadata.windows import WindowRecord

__all__ = ["MAX_WINDOWS", "MonitoringRows", "monitoring_rows"]

MAX_WINDOWS = 200
"""The most windows a page reads (the newest ones of the latest window length)."""
LIVE_ALERTS = 100
RECENT_ALERTS = 25


@dataclass(frozen=True)
class MonitoringRows:
    pipeline: PipelineRecord
    windows: list[WindowRecord]
    """The newest ``limit`` windows, oldest first, all of the length of the newest window."""
    window_seconds: int | None
    """The length shown (None: no window stored yet)."""
    more_windows: bool
    """Older windows of that length exist beyond the ``limit`` shown."""
    alerts: list[AlertRecord]
    """Open and pending episodes first (newest first), then the most recent resolved ones."""


def monitoring_rows(
    metadata: MetadataStore,
    pipeline: str,
    *,
    limit: int = MAX_WINDOWS,
    resolved: int = RECENT_ALERTS,
) -> MonitoringRows:
    """The newest ``limit`` windows and the alert episodes of ``pipeline``; NotFoundError (404)
    for a pipeline the registry does not know. Three indexed queries, however many windows
    the pipeline has stored."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    with metadata.read() as uow:
        record = uow.pipelines.get(pipeline)
        newest = uow.windows.latest(pipeline)
        seconds = None if newest is None else newest.window_seconds
        windows: list[WindowRecord] = []
        if seconds is not None:
            windows = uow.windows.list(pipeline, limit=limit + 1, seconds=seconds)
        live = uow.alerts.list(pipeline, status=["open", "pending"], limit=LIVE_ALERTS)
        done = uow.alerts.list(pipeline, status=["resolved"], limit=resolved)
    live.sort(key=lambda a: (a.status != "open", -a.last_window.timestamp(), -a.id))
    more = len(windows) > limit
    return MonitoringRows(record, windows[-limit:], seconds, more, live + done)
