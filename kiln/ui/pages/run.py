"""The run page: steps, segment tasks with their usage, the fan-out timeline, failed segments
and logs, and a link to the version the run registered."""

from __future__ import annotations

from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from kiln.registry.queries.run import TASKS_SHOWN, RunDetail, Timeline, run_detail
from kiln.ui._deps import Viewer, state
from kiln.ui._render import render
from kiln.ui.api.run import log_url

__all__ = ["fanout_figure", "router"]

router = APIRouter(include_in_schema=False)

_COLOURS = {"succeeded": "#12753a", "failed": "#b42318"}


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    run_id: str,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = TASKS_SHOWN,
) -> HTMLResponse:
    detail: RunDetail = run_detail(state(request).stores.metadata, run_id, limit=limit)
    return render(
        request, "run.html", who,
        d=detail, fanout=fanout_figure(detail.timeline), log_url=log_url,
    )  # fmt: skip


def fanout_figure(timeline: Timeline) -> dict[str, Any] | None:
    """One horizontal bar per task from its start to its finish, a row per segment, coloured by
    status (plotly's JSON; None: no task)."""
    if not timeline.spans:
        return None
    traces: list[dict[str, Any]] = []
    for status in sorted({s.status for s in timeline.spans}):
        spans = [s for s in timeline.spans if s.status == status]
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": status,
                "y": [escape(s.segment) for s in spans],  # plotly renders some HTML
                "base": [s.started_at.isoformat() for s in spans],
                "x": [
                    max(1.0, (s.finished_at - s.started_at).total_seconds() * 1000) for s in spans
                ],
                "marker": {"color": _COLOURS.get(status, "#9a6700")},
                "customdata": [f"{s.started_at:%H:%M:%S}" for s in spans],
                "hovertemplate": "%{y}: %{customdata} + %{x:.0f} ms<extra>%{fullData.name}</extra>",
            }
        )
    title = "tasks of the train step"
    if timeline.sampled:
        title += f" ({len(timeline.spans):,} of {timeline.total:,} shown: every failed one)"
    rows = len({s.segment for s in timeline.spans})
    return {
        "data": traces,
        "layout": {
            "title": {"text": title},
            "barmode": "overlay",
            "xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
            "yaxis": {"type": "category", "automargin": True, "showticklabels": rows <= 60},
            "height": min(900, max(240, 18 * rows + 120)),
            "margin": {"l": 80, "r": 20, "t": 40, "b": 40},
        },
    }
