"""`GET /api/runs/{run_id}`: a run with its steps, a page of its tasks, its fan-out timeline and
the version it registered; `GET /api/runs/{run_id}/logs?segment=`: one task's whole log."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from kiln.registry.queries.run import TASKS_SHOWN, RunDetail, run_detail, task_log
from kiln.ui._deps import Viewer, state

__all__ = ["log_url", "router", "run_json"]

router = APIRouter(prefix="/api", tags=["runs"])


@router.get("/runs/{run_id}")
def get_run(
    request: Request,
    run_id: str,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = TASKS_SHOWN,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> dict[str, Any]:
    """The run (status as shown, trigger, config digest, rows, error), its steps with their
    usage, ``limit`` of its tasks (failed first, then the slowest) with the counts per status,
    the fan-out timeline (sampled past 2,000 tasks) and the version it registered."""
    detail = run_detail(state(request).stores.metadata, run_id, limit=limit, offset=offset)
    return run_json(detail)


@router.get("/runs/{run_id}/logs", response_class=PlainTextResponse)
def get_log(
    request: Request, run_id: str, who: Viewer, segment: Annotated[str, Query(max_length=200)]
) -> PlainTextResponse:
    """The whole log of the run's task for ``segment`` (text)."""
    task = task_log(state(request).stores.metadata, run_id, segment)
    return PlainTextResponse(task.log or "")


def run_json(d: RunDetail) -> dict[str, Any]:
    r = d.run
    return {
        "id": r.id,
        "pipeline": r.pipeline,
        "status": d.status,
        "recorded_status": r.status,
        "trigger": r.trigger,
        "attempt": r.attempt,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "config_digest": r.config_digest,
        "data_digest": r.data_digest,
        "code_revision": r.code_revision,
        "rows": r.rows,
        "error": r.error,
        "host": r.host,
        "version": None
        if d.version is None
        else {
            "version": d.version.version,
            "stage": d.version.stage,
            "url": f"/api/pipelines/{r.pipeline}/versions/{d.version.version}",
        },
        "steps": [asdict(s) for s in d.steps],
        "task_counts": d.task_counts,
        "tasks_total": d.task_total,
        "tasks": [asdict(t) | {"log_url": log_url(r.id, t.segment)} for t in d.tasks],
        "failed_segments": [t.segment for t in d.failed],
        "timeline": {
            "total": d.timeline.total,
            "sampled": d.timeline.sampled,
            "spans": [asdict(s) for s in d.timeline.spans],
        },
    }


def log_url(run_id: str, segment: str) -> str:
    return f"/api/runs/{quote(run_id, safe='')}/logs?segment={quote(segment, safe='')}"
