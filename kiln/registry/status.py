"""What `kiln status` shows: every pipeline's production version, last run, gates, the
versions waiting (shadow, canary) or refused (blocked), and its monitoring state (the latest
stored monitor window).

Read through the catalogue query (kiln.registry.queries.catalogue) page by page, plus one query
per page for the versions waiting or refused and the candidates: bounded work per pipeline,
never every version of every pipeline."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kiln.registry.liveness import ungated_versions
from kiln.registry.queries.catalogue import (
    MAX_PER_PAGE,
    CatalogueFilter,
    CatalogueRow,
    catalogue,
)
from kiln.stores import MetadataStore
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import to_record
from kiln.stores.metadata.engine import READONLY, unreachable
from kiln.stores.metadata.records import VersionRecord

__all__ = ["pipeline_status"]

_WAITING = ("canary", "shadow", "blocked", "candidate")


def pipeline_status(metadata: MetadataStore, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        found = catalogue(metadata, CatalogueFilter(page=page, per_page=MAX_PER_PAGE), now)
        rows += _rows(metadata, found.rows, now)
        if not found.has_next:
            return rows
        page += 1


def _waiting(metadata: MetadataStore, names: list[str]) -> dict[str, list[VersionRecord]]:
    """The canary, shadow, blocked and candidate versions of ``names``, oldest first."""
    mv = t.table_of(t.ModelVersion)
    engine = metadata.engine.execution_options(**{READONLY: True})
    found: dict[str, list[VersionRecord]] = defaultdict(list)
    try:
        with engine.connect() as conn, conn.begin():
            for row in conn.execute(
                sa.select(mv)
                .where(mv.c.pipeline.in_(names), mv.c.stage.in_(_WAITING))
                .order_by(mv.c.pipeline, mv.c.version)
            ):
                found[row.pipeline].append(to_record(VersionRecord, row))
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise unreachable(metadata.url, e) from e
    return found


def _rows(metadata: MetadataStore, page: list[CatalogueRow], now: datetime) -> list[dict[str, Any]]:
    if not page:
        return []
    waiting = _waiting(metadata, [r.pipeline for r in page])
    never_gated: dict[str, list[str]] = {}
    with metadata.read() as uow:
        for name, versions in waiting.items():
            candidates = [v for v in versions if v.stage == "candidate"]
            if candidates:
                found = ungated_versions(uow, name, now=now, legacy=True, versions=candidates)
                never_gated[name] = [u.advice() for u in found]
    return [_row(r, waiting.get(r.pipeline, []), never_gated.get(r.pipeline, []), now)
            for r in page]  # fmt: skip


def _row(
    r: CatalogueRow, versions: list[VersionRecord], never_gated: list[str], now: datetime
) -> dict[str, Any]:
    canary = next((v for v in versions if v.stage == "canary"), None)
    run = r.last_run
    return {
        "pipeline": r.pipeline,
        "production": r.production,
        "production_age": (now - r.production_since).total_seconds()
        if r.production_since is not None
        else None,
        "last_run": f"{run.status} {run.started_at:%Y-%m-%d %H:%M} ({run.trigger})"
        if run is not None
        else None,
        "latest": {"version": r.latest, "stage": r.latest_stage} if r.latest else None,
        "gates": dict(r.gates.gates),
        "canary": f"v{canary.version} at {canary.traffic_share:.0%}"
        if canary and canary.traffic_share is not None
        else None,
        "shadows": [v.version for v in versions if v.stage == "shadow"],
        "blocked": [v.version for v in versions if v.stage == "blocked"],
        "never_gated": never_gated,
        "monitoring": r.monitoring.to_dict(),
    }
