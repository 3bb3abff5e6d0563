"""`/pipelines/{name}/monitoring`: the drift heatmap, the live metric against training, latency
and error rate over the newest windows, and the alert episodes with their acknowledge form."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from kiln.ui._deps import Viewer, state
from kiln.ui._render import render
from kiln.ui.monitoring import monitoring_view

router = APIRouter(include_in_schema=False)


@router.get("/pipelines/{name}/monitoring", response_class=HTMLResponse)
def monitoring_page(
    request: Request, who: Viewer, name: str = Path(max_length=200)
) -> HTMLResponse:
    view = monitoring_view(state(request).stores.metadata, name)
    owner = view.rows.pipeline.owner
    return render(
        request, "monitoring.html", who,
        name=name, view=view, may_ack=who.principal.may_change(name, owner),
        back=request.url.path,
    )  # fmt: skip
