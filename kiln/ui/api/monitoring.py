"""`GET /api/pipelines/{name}/monitoring`: the monitoring page's data as JSON (the newest
windows, the drift heatmap's cells, the figures the page draws, the alert episodes)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from kiln.stores.metadata.alerts import AlertRecord
from kiln.ui._deps import Viewer, state
from kiln.ui.monitoring import MonitoringView, monitoring_view

router = APIRouter(prefix="/api", tags=["monitoring"])

NAME = Path(max_length=200, description="the pipeline's name")


@router.get(
    "/pipelines/{name}/monitoring",
    response_class=JSONResponse,
    responses={404: {"description": "no such pipeline"}},
)
def monitoring(request: Request, who: Viewer, name: str = NAME) -> JSONResponse:
    """The newest monitor windows (at most 200, of the latest window length) of one pipeline,
    the feature x segment drift of the newest window with drift figures, the figures of the
    live metric against training, latency and error rate (plotly JSON), and its alert
    episodes (open and pending first, then recently resolved)."""
    view = monitoring_view(state(request).stores.metadata, name)
    return JSONResponse(
        view_doc(view, may_ack=who.principal.may_change(name, view.rows.pipeline.owner))
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def alert_doc(a: AlertRecord) -> dict[str, Any]:
    return {
        "id": a.id, "check": a.check, "kind": a.kind, "level": a.level, "status": a.status,
        "streak": a.streak, "first_window": _iso(a.first_window),
        "last_window": _iso(a.last_window), "opened_at": _iso(a.opened_at),
        "resolved_at": _iso(a.resolved_at), "value": a.value, "threshold": a.threshold,
        "message": a.message, "acked_by": a.acked_by, "acked_at": _iso(a.acked_at),
        "ack_note": a.ack_note,
    }  # fmt: skip


def view_doc(view: MonitoringView, *, may_ack: bool) -> dict[str, Any]:
    rows = view.rows
    shown = view.heatmap_window
    return {
        "pipeline": rows.pipeline.name,
        "owner": rows.pipeline.owner,
        "state": view.state,
        "window_seconds": rows.window_seconds,
        "more_windows": rows.more_windows,
        "may_ack": may_ack,
        "windows": [
            {
                "start": _iso(p.start),
                "end": _iso(p.end),
                "rows": p.rows,
                "state": p.state,
                "worst": p.worst,
                "version": p.version,
            }
            for p in view.points
        ],
        "drift": None
        if shown is None
        else {
            "window_start": _iso(shown.start),
            "cells": [
                {k: v for k, v in asdict(d).items() if k in _CELL} for d in view.heatmap_cells
            ],
        },
        "figures": {
            "drift_heatmap": view.heatmap,
            "live_metric": view.live_metric,
            "latency": view.latency,
            "error_rate": view.error_rate,
        },
        "alerts": [alert_doc(a) for a in view.alerts],
    }


_CELL = ("version", "segment", "feature", "statistic", "value", "level", "rows", "missing")
