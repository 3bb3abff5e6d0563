"""`GET /api/cost` and `GET /api/pipelines/{name}/cost`: `kiln cost --json --no-measure`'s
document (``schema`` 1) for a period given as ``?since=30d`` or a date."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from kiln.ui._deps import Viewer, state
from kiln.ui.cost import KeyCost, advice_doc, cost_overview, pipeline_cost

router = APIRouter(prefix="/api", tags=["cost"])

SINCE = Query(max_length=100, description="30d (back from now) or a date (2026-11-01)")


@router.get("/cost", response_class=JSONResponse)
def cost(
    request: Request,
    who: Viewer,
    since: Annotated[str | None, SINCE] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JSONResponse:
    """Training, serving and storage per pipeline in the period and as $/month, the previous
    period and the trend, top segments, $ per 1,000 predictions: a page of the pipelines, most
    expensive first (``total`` counts them all). Storage from its stored measurements."""
    ui = state(request)
    view = cost_overview(
        ui.settings, ui.stores, since, page=page, per_page=per_page, recent=ui.recent
    )
    doc = view.report.to_dict()
    start = (page - 1) * per_page
    doc["pipelines"] = doc["pipelines"][start : start + per_page]
    doc |= {"total": view.total, "page": page, "per_page": per_page}
    return JSONResponse(doc)


@router.get("/pipelines/{name}/cost", response_class=JSONResponse,
            responses={404: {"description": "no such pipeline"}})  # fmt: skip
def pipeline(
    request: Request,
    who: Viewer,
    name: Annotated[str, Path(max_length=200)],
    since: Annotated[str | None, SINCE] = None,
) -> JSONResponse:
    """One pipeline's cost as `kiln cost --pipeline NAME --by segment --json --no-measure`
    writes it (with its right-sizing advice), plus ``versions``: the rows by version, and each
    segment's and version's predictions and $ per 1,000 predictions."""
    ui = state(request)
    view = pipeline_cost(ui.settings, ui.stores, name, since, recent=ui.recent)
    doc = view.report.to_dict()
    for p in doc["pipelines"]:
        p["rightsizing"] = [advice_doc(a) for a in view.advice]
    doc |= {
        "pipeline": name,
        "owner": view.owner,
        "segments": [_key(k) for k in view.segments],
        "versions": [_key(k) for k in view.versions],
    }
    return JSONResponse(doc)


def _key(k: KeyCost) -> dict[str, Any]:
    return k.row.to_dict() | {
        "predictions": k.predictions,
        "usd_per_1000_predictions": k.usd_per_1000_predictions,
    }
