"""The page of one pipeline: its versions on a timeline, the deployment history, the primary
metric per segment across versions, its alerts, the audit log, and the action forms for those
who may change it."""

from __future__ import annotations

from collections import defaultdict
from html import escape
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from kiln.registry.queries.pipeline import PipelineView, pipeline_view
from kiln.ui._deps import Viewer, state
from kiln.ui._render import render

router = APIRouter(include_in_schema=False)

STAGE_COLOURS = {
    "candidate": "#667085", "shadow": "#9a6700", "canary": "#dc6803", "production": "#12753a",
    "archived": "#98a2b3", "blocked": "#b42318",
}  # fmt: skip


def timeline_figure(view: PipelineView) -> dict[str, Any] | None:
    """The versions by creation time, one trace per stage (plotly's JSON, plain types)."""
    if not view.versions:
        return None
    by_stage: dict[str, list[Any]] = defaultdict(list)
    for v in reversed(view.versions):
        by_stage[v.stage].append(v)
    data = [
        {
            "type": "scatter", "mode": "markers", "name": stage,
            "x": [v.created_at.isoformat() for v in found],
            "y": [v.version for v in found],
            "text": [f"v{v.version} {stage}" for v in found],
            "marker": {"color": STAGE_COLOURS.get(stage, "#2e5aac"), "size": 9},
        }
        for stage, found in sorted(by_stage.items())
    ]  # fmt: skip
    layout = {
        "margin": {"l": 48, "r": 16, "t": 16, "b": 60}, "height": 280,
        "xaxis": {"title": {"text": "registered"}},
        "yaxis": {"title": {"text": "version"}, "tickformat": "d"}
        | ({"dtick": 1} if len(view.versions) <= 20 else {}),  # whole versions only
        "legend": {"orientation": "h"},
    }  # fmt: skip
    return {"data": data, "layout": layout}


def metric_figure(view: PipelineView) -> dict[str, Any] | None:
    """The primary metric per segment across the newest versions, one line per segment."""
    if not view.segments or view.primary is None:
        return None
    by_segment: dict[str, list[Any]] = defaultdict(list)
    for p in view.segments:
        by_segment[p.segment].append(p)
    data = [
        {
            "type": "scatter", "mode": "lines+markers", "name": escape(segment),
            "x": [p.version for p in points], "y": [p.value for p in points],
            "text": ["fallback" if p.fallback else "own model" for p in points],
        }
        for segment, points in sorted(by_segment.items())
    ]  # fmt: skip
    layout = {
        "margin": {"l": 48, "r": 16, "t": 16, "b": 40}, "height": 320,
        "xaxis": {"title": {"text": "version"}, "dtick": 1},
        "yaxis": {"title": {"text": escape(view.primary)}},
    }  # fmt: skip
    return {"data": data, "layout": layout}


@router.get("/pipelines/{name}", response_class=HTMLResponse)
def pipeline_page(request: Request, name: str, who: Viewer) -> Response:
    ui = state(request)
    view = pipeline_view(ui.stores.metadata, ui.stores.content, name)
    owner = view.pipeline.owner
    return render(
        request, "pipeline.html", who, view=view, p=view.pipeline,
        may_change=who.principal.may_change(name, owner),
        timeline=timeline_figure(view), metric=metric_figure(view),
        back=str(request.url.path),
    )  # fmt: skip
