"""GET /api/pipelines: the catalogue (one page of pipelines, filtered and searched) with each
pipeline's $/month composed from kiln.monitoring.cost for that page's pipelines only."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel

from kiln.errors import KilnError
from kiln.registry.queries import (
    CatalogueFilter,
    CataloguePage,
    CatalogueRow,
    VersionRow,
    catalogue,
    versions_page,
)
from kiln.ui._deps import UiState, Viewer, state

router = APIRouter(prefix="/api", tags=["catalogue"])
COST_TTL = 300.0
"""Seconds a pipeline's $/month is reused before it is read again."""


def _blank(value: str | None) -> str | None:
    """A form's empty choice ("all") is no filter."""
    return value.strip() or None if value is not None else None


def catalogue_filter(
    *,
    q: str | None = None,
    owner: str | None = None,
    stage: str | None = None,
    monitoring: Annotated[str | None, Query(alias="state")] = None,
    page: int = 1,
    per_page: int = 50,
) -> CatalogueFilter:
    """The filter of the catalogue page's and the API's query parameters (an empty choice: no
    filter): ``q`` searched in name, owner and description, ``owner``, ``stage`` (the latest
    version's), ``state`` (monitoring), one page."""
    return CatalogueFilter(
        q=_blank(q), owner=_blank(owner), stage=_blank(stage), state=_blank(monitoring),
        page=page, per_page=per_page,
    )  # fmt: skip


CatalogueQuery = Annotated[CatalogueFilter, Depends(catalogue_filter)]
"""The catalogue's query parameters, as a filter (a dependency of the page and the API)."""


def with_costs(
    app: Any, ui: UiState, page: CataloguePage, now: datetime
) -> tuple[CataloguePage, str | None]:
    """The page with each row's ``monthly_usd`` (the last 30 days; computed at most every
    ``COST_TTL`` seconds per pipeline), and why cost is unknown when it cannot be computed (the
    page is shown without it)."""
    from kiln.config.prices import resolve_prices
    from kiln.monitoring.cost.report import monthly_costs

    if not page.rows:
        return page, None
    cache: dict[str, tuple[float, float | None]] = cache_of(app)
    clock = time.monotonic()
    missing = [
        r.pipeline
        for r in page.rows
        if r.pipeline not in cache or clock - cache[r.pipeline][0] > COST_TTL
    ]
    if missing:
        try:
            prices = resolve_prices(ui.settings)
            costs = monthly_costs(ui.stores.metadata, prices, now=now, pipelines=missing)
        except KilnError as e:
            return page, e.message
        for name in missing:
            found = costs.get(name)
            cache[name] = (clock, None if found is None else float(found.usd))
    rows = [dataclasses.replace(r, monthly_usd=cache[r.pipeline][1]) for r in page.rows]
    return dataclasses.replace(page, rows=rows), None


def cache_of(app: Any) -> dict[str, tuple[float, float | None]]:
    """The app's $/month per pipeline with when it was computed (one dict per app: a cost
    figure over 30 days moves slowly, and reading every run of a page's pipelines is the
    slowest read of the page)."""
    found = getattr(app.state, "catalogue_costs", None)
    if found is None:
        found = app.state.catalogue_costs = {}
    return found


class CatalogueAnswer(BaseModel):
    rows: list[CatalogueRow]
    total: int
    page: int
    per_page: int
    pages: int
    owners: list[str]
    cost_problem: str | None


@router.get("/pipelines", response_model=CatalogueAnswer)
def pipelines(request: Request, who: Viewer, flt: CatalogueQuery) -> CatalogueAnswer:
    """The catalogue: pipelines ordered by name, ``q`` searched in name, owner and description,
    ``owner``, ``stage`` (the latest version's) and ``state`` (monitoring) filters, one page."""
    ui = state(request)
    now = datetime.now(UTC)
    found, problem = with_costs(request.app, ui, catalogue(ui.stores.metadata, flt, now), now)
    return CatalogueAnswer(
        rows=found.rows, total=found.total, page=found.page, per_page=found.per_page,
        pages=found.pages, owners=found.owners, cost_problem=problem,
    )  # fmt: skip


class VersionsAnswer(BaseModel):
    rows: list[VersionRow]
    total: int
    page: int
    per_page: int
    pages: int


@router.get("/pipelines/{name}/versions", response_model=VersionsAnswer)
def versions(
    request: Request,
    who: Viewer,
    *,
    name: Annotated[str, Path(max_length=200)],
    stage: str | None = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> VersionsAnswer:
    """A pipeline's versions, newest first, one page (``stage``: only those at that stage);
    what `kiln models list --pipeline NAME` lists."""
    ui = state(request)
    with ui.stores.metadata.read() as uow:
        uow.pipelines.get(name)  # 404 for an unknown pipeline
    found = versions_page(ui.stores.metadata, name, _blank(stage), page, per_page)
    return VersionsAnswer(
        rows=found.rows, total=found.total, page=found.page, per_page=found.per_page,
        pages=found.pages,
    )  # fmt: skip
