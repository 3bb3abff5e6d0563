"""One pipeline as JSON: its versions, deployments, per-segment metric, alerts and audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from kiln.registry.queries.pipeline import (
    MAX_AUDIT,
    PipelineVersion,
    SegmentPoint,
    pipeline_audit,
    pipeline_view,
)
from kiln.stores.metadata.records import AuditRecord, DeploymentRecord
from kiln.ui._deps import Viewer, state

router = APIRouter(prefix="/api", tags=["pipelines"])


class AlertOut(BaseModel):
    id: int
    check: str
    kind: str
    level: str
    status: str
    message: str
    first_window: datetime
    last_window: datetime
    acked_by: str | None
    acked_at: datetime | None
    ack_note: str | None


class PipelineOut(BaseModel):
    name: str
    owner: str
    description: str
    config_path: str
    version_count: int
    production: int | None
    versions: list[PipelineVersion]
    deployments: list[DeploymentRecord]
    primary: str | None
    segments: list[SegmentPoint]
    segments_from_manifests: int
    open_alerts: list[AlertOut]
    recent_alerts: list[AlertOut]
    audit: list[AuditRecord]
    latest_run: str | None
    latest_run_status: str | None
    resumable_run: str | None
    may_change: bool


def _fields(record: Any, model: type[BaseModel]) -> dict[str, Any]:
    return {k: getattr(record, k) for k in model.model_fields}


@router.get("/pipelines/{name}", response_model=PipelineOut)
def pipeline(request: Request, name: str, who: Viewer) -> dict[str, Any]:
    """The pipeline with its newest 200 versions, deployments, the primary metric per segment of
    its newest 30 versions (from their manifests), alerts and its newest 100 audit events."""
    ui = state(request)
    v = pipeline_view(ui.stores.metadata, ui.stores.content, name)
    p = v.pipeline
    return dict(
        name=p.name, owner=p.owner, description=p.description, config_path=p.config_path,
        version_count=v.version_count, production=v.production,
        versions=v.versions, deployments=v.deployments, primary=v.primary, segments=v.segments,
        segments_from_manifests=v.manifests_read,
        open_alerts=[_fields(a, AlertOut) for a in v.open_alerts],
        recent_alerts=[_fields(a, AlertOut) for a in v.recent_alerts],
        audit=v.audit,
        latest_run=v.latest_run.id if v.latest_run else None,
        latest_run_status=v.latest_run_status, resumable_run=v.resumable_run,
        may_change=who.principal.may_change(name, p.owner),
    )  # fmt: skip


@router.get("/pipelines/{name}/audit", response_model=list[AuditRecord])
def audit(
    request: Request, name: str, who: Viewer, limit: int = Query(100, ge=1, le=MAX_AUDIT)
) -> tuple[AuditRecord, ...]:
    """The pipeline's audit log, newest first: who changed what, when, and why."""
    return pipeline_audit(state(request).stores.metadata, name, limit)
