"""``/``: the catalogue of every pipeline (what serves it and since when, its latest version's
stage and gates, monitoring, $/month, last run), searched, filtered and paged."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from kiln.registry.queries import MONITOR_STATES, CatalogueFilter, catalogue
from kiln.stores.metadata.tables import STAGES
from kiln.ui._deps import Viewer, state
from kiln.ui._render import render
from kiln.ui.api.catalogue import CatalogueQuery, with_costs

router = APIRouter(include_in_schema=False)


def _link(flt: CatalogueFilter, page: int) -> str:
    """The URL of ``page`` with the same filters (only the ones set)."""
    params = {"q": flt.q, "owner": flt.owner, "stage": flt.stage, "state": flt.state}
    shown = {k: v for k, v in params.items() if v}
    if flt.per_page != CatalogueFilter.per_page:
        shown["per_page"] = str(flt.per_page)
    if page != 1:
        shown["page"] = str(page)
    return "/?" + urlencode(shown) if shown else "/"


@router.get("/", response_class=HTMLResponse)
def catalogue_page(request: Request, who: Viewer, flt: CatalogueQuery) -> HTMLResponse:
    ui = state(request)
    now = datetime.now(UTC)
    page = flt.page
    found, cost_problem = with_costs(request.app, ui, catalogue(ui.stores.metadata, flt, now), now)
    prev_url = _link(flt, page - 1) if page > 1 else None
    if page > found.pages:  # past the end: "previous" goes back to the last page
        prev_url = _link(flt, found.pages)
    return render(
        request, "catalogue.html", who,
        found=found, flt=flt, now=now, cost_problem=cost_problem,
        stages=STAGES, states=MONITOR_STATES,
        prev_url=prev_url,
        next_url=_link(flt, page + 1) if found.has_next else None,
        last_url=_link(flt, found.pages),
    )  # fmt: skip
