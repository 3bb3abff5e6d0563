"""What the page of one pipeline shows, in one read unit of work with bounded work.

The pipeline, its newest versions (at most ``versions``, newest first), its deployment history,
its open and recent alerts, its audit log, its latest run, and the primary metric per segment
across its newest versions. ``model_versions.metrics`` holds only the overall figures (primary
metric name, ``overall``, ``fallback_only``, the segment count); the per-segment figures are in
each version's manifest, so those of the newest ``manifests`` versions are read through the
content store. A manifest is content-addressed and never changes, so what is taken from it is
kept in a small cache by digest.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from kiln.errors import KilnError
from kiln.registry.liveness import shown_status
from kiln.stores import ContentStore, MetadataStore
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.alerts import AlertRecord
from kiln.stores.metadata.base import to_record
from kiln.stores.metadata.records import (
    AuditRecord,
    DeploymentRecord,
    PipelineRecord,
    RunRecord,
)

__all__ = [
    "PipelineVersion",
    "PipelineView",
    "SegmentPoint",
    "pipeline_audit",
    "pipeline_view",
]

MAX_VERSIONS = 200
MAX_MANIFESTS = 30
MAX_AUDIT = 500
_CACHE_SIZE = 4096
_segment_cache: OrderedDict[str, tuple[SegmentPoint, ...]] = OrderedDict()


@dataclass(frozen=True)
class PipelineVersion:
    """One version as the pipeline page lists it."""

    version: int
    stage: str
    created_at: datetime
    stage_changed_at: datetime
    run_id: str
    primary: str | None
    """The name of the primary metric."""
    headline: float | None
    """The primary metric over the whole holdout (the served routing)."""
    experiment: str | None
    traffic_share: float | None


@dataclass(frozen=True)
class SegmentPoint:
    """The primary metric of one segment of one version (``fallback``: the segment is served
    by the fallback model, and the figure is the fallback's on its rows)."""

    version: int
    segment: str
    value: float | None
    fallback: bool = False


@dataclass(frozen=True)
class PipelineView:
    pipeline: PipelineRecord
    versions: tuple[PipelineVersion, ...]
    """Newest first, at most ``MAX_VERSIONS`` (``version_count`` says how many there are)."""
    version_count: int
    production: int | None
    deployments: tuple[DeploymentRecord, ...]
    primary: str | None
    segments: tuple[SegmentPoint, ...]
    """Per segment, of the newest ``manifests_read`` versions (oldest first)."""
    manifests_read: int
    manifest_errors: tuple[str, ...]
    open_alerts: tuple[AlertRecord, ...]
    recent_alerts: tuple[AlertRecord, ...]
    audit: tuple[AuditRecord, ...]
    latest_run: RunRecord | None
    latest_run_status: str | None
    resumable_run: str | None
    """The latest run when it failed or was interrupted (``kiln run --resume`` takes it)."""


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _headline(metrics: dict[str, Any]) -> tuple[str | None, float | None]:
    primary = metrics.get("primary")
    if not isinstance(primary, str):
        return None, None
    overall = metrics.get("overall") or {}
    return primary, _float(overall.get(primary)) if isinstance(overall, dict) else None


def _row(v: Any) -> PipelineVersion:
    version, stage, created, changed, run_id, metrics, experiment, share, _ = v
    primary, headline = _headline(metrics or {})
    return PipelineVersion(
        version, stage, _utc(created), _utc(changed), run_id, primary, headline,
        experiment or None, share,
    )  # fmt: skip


def _utc(moment: datetime) -> datetime:
    """SQLite gives naive datetimes back from a column select (the ORM's type adds UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _read_segments(
    content: ContentStore, digest: str, version: int, primary: str
) -> tuple[SegmentPoint, ...]:
    key = f"{digest}:{primary}"
    cached = _segment_cache.get(key)
    if cached is None:
        manifest = orjson.loads(content.get(digest, what="manifest"))
        points = []
        for seg, ref in sorted((manifest.get("models") or {}).items()):
            points.append(
                SegmentPoint(0, str(seg), _float((ref.get("metrics") or {}).get(primary)))
            )
        for seg, ref in sorted((manifest.get("routed_to_fallback") or {}).items()):
            value = _float((ref.get("fallback_metrics") or {}).get(primary))
            points.append(SegmentPoint(0, str(seg), value, fallback=True))
        cached = tuple(points)
        _segment_cache[key] = cached
        while len(_segment_cache) > _CACHE_SIZE:
            _segment_cache.popitem(last=False)
    return tuple(SegmentPoint(version, p.segment, p.value, p.fallback) for p in cached)


def pipeline_view(
    metadata: MetadataStore,
    content: ContentStore,
    name: str,
    *,
    versions: int = MAX_VERSIONS,
    manifests: int = MAX_MANIFESTS,
    audit: int = 100,
    deployments: int = 100,
    alerts: int = 20,
) -> PipelineView:
    """The page of pipeline ``name`` (NotFoundError naming it when there is none)."""
    versions = max(1, min(versions, MAX_VERSIONS))
    manifests = max(0, min(manifests, MAX_MANIFESTS))
    with metadata.read() as uow:
        pipeline = uow.pipelines.get(name)
        session = uow.versions._session
        mv = t.ModelVersion
        # the columns the page shows (not the lineage, which can be large): one indexed read
        rows = session.execute(
            sa.select(
                mv.version, mv.stage, mv.created_at, mv.stage_changed_at, mv.run_id, mv.metrics,
                mv.lineage["experiment"].as_string(), mv.traffic_share, mv.manifest_digest,
            )
            .where(mv.pipeline == name)
            .order_by(mv.version.desc())
            .limit(versions)
        ).all()  # fmt: skip
        count = session.scalar(sa.select(sa.func.count()).where(mv.pipeline == name)) or 0
        production = session.scalar(
            sa.select(mv.version).where(mv.pipeline == name, mv.stage == "production")
        )
        history = tuple(uow.deployments.list(name, limit=deployments))
        open_alerts = tuple(uow.alerts.list(name, status=("pending", "open"), limit=alerts))
        recent = tuple(uow.alerts.list(name, limit=alerts))
        events = _audit(session, name, min(audit, MAX_AUDIT))
        # by the (pipeline, started_at) index alone: runs.latest() breaks ties by id, which
        # sorts every run of the pipeline
        newest = session.scalars(
            sa.select(t.Run)
            .where(t.Run.pipeline == name)
            .order_by(t.Run.started_at.desc())
            .limit(1)
        ).first()
        latest = None if newest is None else to_record(RunRecord, newest)
        status = None if latest is None else shown_status(latest, uow.locks.get(name))
    listed = tuple(_row(v) for v in rows)
    digests = {v[0]: v[-1] for v in rows}
    primary = next((v.primary for v in listed if v.primary), None)
    points: list[SegmentPoint] = []
    errors: list[str] = []
    read = 0
    if primary is not None:
        for v in reversed(listed[:manifests]):
            read += 1
            try:
                points.extend(_read_segments(content, digests[v.version], v.version, primary))
            except (KilnError, OSError, orjson.JSONDecodeError, AttributeError) as e:
                errors.append(f"v{v.version}: {e}")
    resumable = latest.id if latest is not None and status in ("failed", "interrupted") else None
    return PipelineView(
        pipeline=pipeline, versions=listed, version_count=int(count), production=production,
        deployments=history, primary=primary, segments=tuple(points), manifests_read=read,
        manifest_errors=tuple(errors), open_alerts=open_alerts, recent_alerts=recent,
        audit=events, latest_run=latest, latest_run_status=status, resumable_run=resumable,
    )  # fmt: skip


def _audit(session: Session, name: str, limit: int) -> tuple[AuditRecord, ...]:
    """The newest events by the (pipeline, at) index, as plain rows (no ORM objects)."""
    a = t.table_of(t.AuditEvent)
    stmt = sa.select(a).where(a.c.pipeline == name).order_by(a.c.at.desc(), a.c.id.desc())
    return tuple(to_record(AuditRecord, row) for row in session.execute(stmt.limit(limit)))


def pipeline_audit(metadata: MetadataStore, name: str, limit: int = 100) -> tuple[AuditRecord, ...]:
    """The audit log of pipeline ``name``, newest first (NotFoundError when there is none)."""
    with metadata.read() as uow:
        uow.pipelines.get(name)
        return _audit(uow.audit._session, name, max(1, min(limit, MAX_AUDIT)))
