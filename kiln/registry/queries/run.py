"""What the run page shows: the run, its steps, its segment tasks with their usage and logs, the
fan-out's timeline, the failed segments and the version it registered.

Bounded for a run of 10,000 tasks: the tasks come as one page (failed first, then the slowest)
with the counts per status, the timeline reads only (segment, status, start, finish) and keeps
at most ``TIMELINE_MAX`` spans (every failed one, an even sample of the rest), and a log is cut
at ``LOG_CHARS`` (``/api/runs/{id}/logs?segment=`` gives it whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kiln.pipeline.plan import segment_label
from kiln.registry.liveness import shown_status
from kiln.stores import MetadataStore
from kiln.stores.metadata.records import RunRecord, StepRecord, TaskRecord, VersionRecord

__all__ = [
    "LOG_CHARS",
    "TASKS_SHOWN",
    "TIMELINE_MAX",
    "RunDetail",
    "Span",
    "StepLine",
    "TaskLine",
    "Timeline",
    "run_detail",
    "task_log",
]

TASKS_SHOWN = 200
TIMELINE_MAX = 2000
LOG_CHARS = 4000


@dataclass(frozen=True)
class StepLine:
    name: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    wall_seconds: float | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None
    error: str | None
    attempts: int


@dataclass(frozen=True)
class TaskLine:
    segment: str
    """The task's key (``__fallback__`` for the fallback's); ``label`` is as tables show it."""
    label: str
    status: str
    attempt: int
    started_at: datetime
    finished_at: datetime
    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    own_memory_bytes: int | None
    rows_train: int
    rows_holdout: int
    error: str | None
    log: str
    """Cut at ``LOG_CHARS``; ``log_truncated`` says so."""
    log_chars: int
    log_truncated: bool


@dataclass(frozen=True)
class Span:
    segment: str
    """As tables show it (``(fallback)``)."""
    status: str
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class Timeline:
    spans: list[Span]
    total: int
    """Tasks of the run; ``spans`` holds all of them up to ``TIMELINE_MAX``, else a sample."""

    @property
    def sampled(self) -> bool:
        return len(self.spans) < self.total


@dataclass(frozen=True)
class RunDetail:
    run: RunRecord
    status: str
    """As shown: ``interrupted`` for a ``running`` run whose process is dead."""
    steps: list[StepLine]
    tasks: list[TaskLine]
    """One page: failed first, then the slowest."""
    task_counts: dict[str, int]
    failed: list[TaskLine]
    """The failed tasks of the page (all failed tasks come first in it)."""
    timeline: Timeline
    version: VersionRecord | None

    @property
    def task_total(self) -> int:
        return sum(self.task_counts.values())

    @property
    def failed_total(self) -> int:
        return self.task_counts.get("failed", 0)


def run_detail(
    metadata: MetadataStore, run_id: str, *, limit: int = TASKS_SHOWN, offset: int = 0
) -> RunDetail:
    """Everything the run page shows (NotFoundError: no such run)."""
    limit = max(1, min(limit, 1000))
    with metadata.read() as uow:
        run = uow.runs.get(run_id)
        status = shown_status(run, uow.locks.get(run.pipeline))
        steps = uow.steps.for_run(run_id)
        tasks = uow.tasks.page(run_id, limit=limit, offset=max(0, offset))
        counts = uow.tasks.counts(run_id)
        spans = uow.tasks.spans(run_id, most=TIMELINE_MAX, total=sum(counts.values()))
        version = uow.versions.for_run(run_id)
    lines = [_task(t) for t in tasks]
    return RunDetail(
        run=run,
        status=status,
        steps=[_step(s) for s in steps],
        tasks=lines,
        task_counts=counts,
        failed=[t for t in lines if t.status == "failed"],
        timeline=_timeline(spans, sum(counts.values())),
        version=version,
    )


def task_log(metadata: MetadataStore, run_id: str, segment: str) -> TaskRecord:
    """One task whole, its log uncut (NotFoundError: no such run or segment)."""
    with metadata.read() as uow:
        uow.runs.get(run_id)
        return uow.tasks.get(run_id, segment)


def _step(s: StepRecord) -> StepLine:
    return StepLine(
        s.name, s.status, s.started_at, s.finished_at, s.wall_seconds, s.cpu_seconds,
        s.peak_memory_bytes, s.error, 1 + len(s.earlier_attempts or []),
    )  # fmt: skip


def _task(t: TaskRecord) -> TaskLine:
    log = t.log or ""
    return TaskLine(
        segment=t.segment,
        label=segment_label(t.segment),
        status=t.status,
        attempt=t.attempt,
        started_at=t.started_at,
        finished_at=t.finished_at,
        wall_seconds=t.wall_seconds,
        cpu_seconds=t.cpu_seconds,
        peak_memory_bytes=t.peak_memory_bytes,
        own_memory_bytes=t.own_memory_bytes,
        rows_train=t.rows_train,
        rows_holdout=t.rows_holdout,
        error=t.error,
        log=log[-LOG_CHARS:] if len(log) > LOG_CHARS else log,
        log_chars=len(log),
        log_truncated=len(log) > LOG_CHARS,
    )


def _timeline(
    rows: list[tuple[str, str, datetime, datetime]], total: int | None = None
) -> Timeline:
    """Every span up to ``TIMELINE_MAX``; past it every failed one and an even sample of the
    rest (by start time), so that the chart stays drawable. ``total``: the run's tasks (the
    store may have sampled ``rows`` already)."""
    spans = [Span(segment_label(seg), status, a, b) for seg, status, a, b in rows]
    total = len(spans) if total is None else total
    if len(spans) <= TIMELINE_MAX:
        return Timeline(spans, total)
    failed = [s for s in spans if s.status == "failed"][:TIMELINE_MAX]
    rest = [s for s in spans if s.status != "failed"]
    room = TIMELINE_MAX - len(failed)
    step = len(rest) / room if room else 0
    sample = [rest[int(i * step)] for i in range(room)] if room else []
    kept = sorted(failed + sample, key=lambda s: s.started_at)
    return Timeline(kept, total)
