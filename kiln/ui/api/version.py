"""`GET /api/pipelines/{name}/versions/{version}`: one version with its metrics per segment,
lineage, every gate's evidence and the comparison with its champion."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request

from kiln.registry.queries.version import VersionDetail, parse_version, version_detail
from kiln.ui._deps import Viewer, state

__all__ = ["finite", "router", "version_json"]

router = APIRouter(prefix="/api", tags=["versions"])


@router.get("/pipelines/{name}/versions/{version}")
def get_version(request: Request, name: str, version: str, who: Viewer) -> dict[str, Any]:
    """The version (``3`` or ``v3``): stage, run, per-segment metrics with the fallback's,
    lineage, gate evidence (failing segments and requests, and the full evidence) and the
    champion's metrics side by side. 404 when the pipeline or version does not exist."""
    stores = state(request).stores
    number = parse_version(name, version)
    return finite(version_json(version_detail(stores.metadata, stores.content, name, number)))


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (a metric undefined on a segment) as None: JSON has
    no such numbers, and the response would fail on them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def version_json(d: VersionDetail) -> dict[str, Any]:
    r = d.record
    return {
        "pipeline": d.pipeline,
        "owner": d.owner,
        "version": r.version,
        "stage": r.stage,
        "traffic_share": r.traffic_share,
        "created_at": r.created_at,
        "stage_changed_at": r.stage_changed_at,
        "experiment": r.experiment,
        "run": {"id": d.run.id, "status": d.run_status, "url": f"/api/runs/{d.run.id}"},
        "primary_metric": d.primary,
        "metrics": d.metric_names,
        "overall": d.overall,
        "fallback_only": d.fallback_only,
        "segments": [asdict(s) for s in d.segments],
        "lineage": asdict(d.lineage),
        "gates": [
            {
                "gate": g.gate,
                "status": g.status,
                "summary": g.summary,
                "evaluated_at": g.evaluated_at,
                "trigger": g.trigger,
                "champion_version": g.champion_version,
                "failing_segments": [asdict(s) for s in g.failing_segments],
                "failing_requests": [asdict(x) for x in g.failing_requests],
                "evidence": g.evidence,
                "history": [
                    {
                        "status": h.status,
                        "trigger": h.trigger,
                        "summary": h.summary,
                        "evaluated_at": h.evaluated_at,
                        "champion_version": h.champion_version,
                    }
                    for h in g.history
                ],
            }
            for g in d.gates
        ],
        "champion": None
        if d.champion is None
        else {
            "version": d.champion.version,
            "stage": d.champion.stage,
            "why": d.champion.why,
            "metrics": d.champion.metrics,
            "segments": [
                {
                    "segment": seg,
                    "this": mine,
                    "champion": theirs,
                    "difference": d.champion.deltas.get(seg, {}),
                }
                for seg, mine, theirs in d.champion.rows
            ],
        },
    }
