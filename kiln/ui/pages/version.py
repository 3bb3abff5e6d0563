"""The version page: the evidence next to the decision. A failed gate comes first with its
failing segments and requests, then the override form (for whoever may change the pipeline),
the metrics per segment with the fallback's, the lineage and the comparison with the champion."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from kiln.registry.queries.version import VersionDetail, parse_version, version_detail
from kiln.ui._deps import Viewer, state
from kiln.ui._render import render

__all__ = ["allowed_actions", "router"]

router = APIRouter(include_in_schema=False)


@router.get("/pipelines/{name}/versions/{version}", response_class=HTMLResponse)
def version_page(request: Request, name: str, version: str, who: Viewer) -> HTMLResponse:
    stores = state(request).stores
    number = parse_version(name, version)
    detail = version_detail(stores.metadata, stores.content, name, number)
    may = who.principal.may_change(name, detail.owner)
    return render(
        request, "version.html", who,
        d=detail, may_change=may, actions=allowed_actions(detail) if may else [],
        here=f"/pipelines/{name}/versions/{detail.version}",
    )  # fmt: skip


def allowed_actions(d: VersionDetail) -> list[str]:
    """The stage actions the version's stage allows (kiln.registry.stages refuses the rest):
    override for a blocked version; promote, shadow or unshadow, and block otherwise."""
    stage = d.stage
    if stage == "blocked":
        return ["override"]
    if d.record.experiment is not None or stage in ("production", "archived"):
        return ["promote"] if stage == "archived" and d.record.experiment is None else []
    found = ["promote"]
    if stage == "shadow":
        found.append("unshadow")
    elif stage == "candidate":
        found.append("shadow")
    found.append("block")
    return found
