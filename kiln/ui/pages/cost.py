"""`/cost` (every pipeline's cost, a page at a time, most expensive first) and
`/pipelines/{name}/cost` (one pipeline per segment and per version, with right-sizing)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from kiln.ui._deps import Viewer, state
from kiln.ui._render import render
from kiln.ui.cost import cost_overview, pipeline_cost

router = APIRouter(include_in_schema=False)

SINCE = Query(max_length=100)


@router.get("/cost", response_class=HTMLResponse)
def cost_page(
    request: Request,
    who: Viewer,
    since: Annotated[str | None, SINCE] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> HTMLResponse:
    ui = state(request)
    view = cost_overview(
        ui.settings, ui.stores, since, page=page, per_page=per_page, recent=ui.recent
    )
    return render(request, "cost.html", who, view=view)


@router.get("/pipelines/{name}/cost", response_class=HTMLResponse)
def pipeline_cost_page(
    request: Request,
    who: Viewer,
    name: Annotated[str, Path(max_length=200)],
    since: Annotated[str | None, SINCE] = None,
) -> HTMLResponse:
    ui = state(request)
    view = pipeline_cost(ui.settings, ui.stores, name, since, recent=ui.recent)
    return render(request, "cost_pipeline.html", who, view=view, name=name)
