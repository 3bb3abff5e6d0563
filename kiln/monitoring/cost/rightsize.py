"""Right-sizing: a pipeline's requested ``resources`` against what its last run measured.

Memory: ``resources.memory`` is a limit per task, and a task's limit covers its whole worker
process, so it is compared with the largest task's own peak plus the worker's base. CPUs:
``resources.cpus`` (tasks at once) is compared with the parallelism the train step reached
(the tasks' CPU seconds over its wall time) and with the number of tasks. Advice is given
when a request is at least twice what is needed (lower it) or was passed (raise it); a
request that is not set gets one line saying what it would be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from kiln.monitoring.cost.training import requested_resources
from kiln.stores.metadata import MetadataStore, RunRecord, StepRecord, TaskRecord

__all__ = ["HEADROOM", "Advice", "rightsizing", "suggest_memory"]

HEADROOM = 1.5
"""Memory suggested per byte of measured peak."""
_MiB = 2**20
_RECENT_RUNS = 20


@dataclass(frozen=True)
class Advice:
    """One piece of advice on one resource; ``requested`` None: not set in kiln.yaml."""

    resource: Literal["cpus", "memory"]
    requested: float | None
    used: float
    """Memory: bytes (the largest task's own peak + its worker's base); cpus: mean cores."""
    suggested: float | None
    text: str


def rightsizing(
    metadata: MetadataStore, pipeline: str, *, run_id: str | None = None
) -> list[Advice]:
    """Advice from ``run_id``, else from the pipeline's latest run that trained tasks (none
    when no run trained any). An unknown run or pipeline is a NotFoundError."""
    with metadata.read() as uow:
        runs = [uow.runs.get(run_id)] if run_id else uow.runs.list(pipeline, limit=_RECENT_RUNS)
        for run in runs:
            tasks = uow.tasks.for_run(run.id)
            if tasks:
                return _advice(run, uow.steps.for_run(run.id), tasks)
    return []


def _advice(run: RunRecord, steps: list[StepRecord], tasks: list[TaskRecord]) -> list[Advice]:
    cpus, memory = requested_resources(run.config_text)
    advice = [a for a in (_memory(memory, tasks), _cpus(cpus, steps, tasks)) if a is not None]
    return advice


def _memory(requested: int | None, tasks: list[TaskRecord]) -> Advice | None:
    own = [t.own_memory_bytes for t in tasks if t.own_memory_bytes is not None]
    bases = [t.base_memory_bytes for t in tasks if t.base_memory_bytes is not None]
    if own and bases:
        used = float(max(own) + max(bases))
        what = f"{_mib(used)} peak (largest task {_mib(max(own))} + worker {_mib(max(bases))})"
    else:  # an older run: only the worker's peak is known
        used = float(max(t.peak_memory_bytes for t in tasks))
        what = f"{_mib(used)} peak (the worker's)"
    suggested = suggest_memory(used)
    if requested is None:
        return Advice(
            "memory", None, used, suggested,
            f"memory unset, {what}: resources.memory: {size_text(suggested)} would fit it",
        )  # fmt: skip
    if used > requested:
        text = (
            f"memory {size_text(requested)} requested, {what}: raise it to {size_text(suggested)}"
        )
        return Advice("memory", requested, used, suggested, text)
    if suggested * 2 <= requested:
        text = (
            f"memory {size_text(requested)} requested, {what}: lower it to {size_text(suggested)}"
        )
        return Advice("memory", requested, used, suggested, text)
    return None


def _cpus(requested: int | None, steps: list[StepRecord], tasks: list[TaskRecord]) -> Advice | None:
    train = next((s for s in steps if s.name == "train"), None)
    if train is None or not train.wall_seconds:
        return None
    ran = [t for t in tasks if t.started_at >= train.started_at]  # not the reused ones
    if not ran:
        return None
    used = sum(t.cpu_seconds for t in ran) / train.wall_seconds
    workers = train.details.get("workers")
    need = max(1, min(len(tasks), math.ceil(used * HEADROOM)))
    what = f"{used:.2f} cores used on average over {len(ran)} tasks"
    if requested is None:
        have = f" (it ran {workers} at once)" if workers else ""
        text = f"cpus unset{have}, {what}: resources.cpus: {need} would do"
        return Advice("cpus", None, used, float(need), text)
    if requested > len(tasks):
        text = f"cpus {requested} requested, {len(tasks)} tasks: lower it to {len(tasks)}"
        return Advice("cpus", requested, used, float(len(tasks)), text)
    if used >= 0.9 * requested and len(tasks) > requested:
        more = min(len(tasks), requested * 2)
        text = f"cpus {requested} requested, {what}: raise it to {more} to finish sooner"
        return Advice("cpus", requested, used, float(more), text)
    if need * 2 <= requested:
        text = f"cpus {requested} requested, {what}: lower it to {need}"
        return Advice("cpus", requested, used, float(need), text)
    return None


def suggest_memory(used: float) -> int:
    """``used`` with headroom, rounded up to a power of two or 1.5 times one, from 64MiB."""
    target = used * HEADROOM
    size = 64 * _MiB
    while True:
        for candidate in (size, size * 3 // 2):
            if candidate >= target:
                return candidate
        size *= 2


def size_text(nbytes: float) -> str:
    """A size as kiln.yaml takes it: 512MiB, 1.5GiB, 2GiB."""
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:g}GiB"
    return f"{nbytes / _MiB:g}MiB"


def _mib(nbytes: float) -> str:
    return f"{nbytes / _MiB:.0f} MiB"
