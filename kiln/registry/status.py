"""What `kiln status` shows: every pipeline's production version, last run, gates, the
versions waiting (shadow, canary) or refused (blocked), and its monitoring state (the latest
stored monitor window), read in one unit of work."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kiln.registry.liveness import shown_status, ungated_versions
from kiln.stores import MetadataStore
from kiln.stores.metadata.windows import WindowRecord

__all__ = ["pipeline_status"]


def pipeline_status(metadata: MetadataStore, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    with metadata.read() as uow:
        for pipeline in uow.pipelines.list():
            versions = uow.versions.list(pipeline.name)
            production = next((v for v in versions if v.stage == "production"), None)
            canary = next((v for v in versions if v.stage == "canary"), None)
            released = [v for v in versions if v.experiment is None]  # experiments never serve
            latest = released[-1] if released else None
            run = uow.runs.latest(pipeline.name)
            lock = uow.locks.get(pipeline.name)
            ungated = ungated_versions(uow, pipeline.name, now=now, legacy=True)
            last_run = None
            if run is not None:
                shown = shown_status(run, lock, now=now)  # `running` with a dead process: not
                last_run = f"{shown} {run.started_at:%Y-%m-%d %H:%M} ({run.trigger})"
            gates: dict[str, str] = {}
            if latest is not None:
                found = uow.gates.for_version(pipeline.name, latest.version)
                gates = {g.gate: g.status for g in found}
            rows.append(
                {
                    "pipeline": pipeline.name,
                    "production": production.version if production else None,
                    "production_age": (now - production.stage_changed_at).total_seconds()
                    if production
                    else None,
                    "last_run": last_run,
                    "latest": {"version": latest.version, "stage": latest.stage}
                    if latest
                    else None,
                    "gates": gates,
                    "canary": f"v{canary.version} at {canary.traffic_share:.0%}"
                    if canary and canary.traffic_share is not None
                    else None,
                    "shadows": [v.version for v in versions if v.stage == "shadow"],
                    "blocked": [v.version for v in versions if v.stage == "blocked"],
                    "never_gated": [u.advice() for u in ungated],
                    "monitoring": _monitoring(uow.windows.latest(pipeline.name)),
                }
            )
    return rows


def _monitoring(window: WindowRecord | None) -> dict[str, Any]:
    """The state of the latest monitor window (``ok``, ``warn``, ``alert``, ``no traffic``, or
    ``not monitored yet``) with its worst finding's check, feature, segment and figures."""
    if window is None:
        return {"state": "not monitored yet"}
    found: dict[str, Any] = {
        "state": "no traffic" if window.state == "no_traffic" else window.state,
        "window_start": window.window_start.isoformat(),
        "window_end": window.window_end.isoformat(),
    }
    worst = next(
        (f for f in window.summary.get("findings", []) if f.get("check") == window.worst), None
    )
    if worst is not None:
        found |= {k: worst.get(k) for k in ("check", "feature", "segment", "value", "threshold")}
        found["statistic"] = (worst.get("details") or {}).get("statistic")
    return found
