"""Training cost, the maths: what one run's segment tasks, shared workers and other steps
cost (the reads are in :mod:`kiln.monitoring.cost.training`).

Charged as OpenCost charges a container (:func:`~kiln.monitoring.cost.model.charge`):

- a **task** reserved ``threads_per_task`` vCPUs for its wall time and is charged the max of
  that and its CPU seconds; ``resources.memory`` (R) is a per-task *process* limit, the
  worker's base memory (B) included, so the task's own memory is charged
  max(R - B, own) x wall (own x wall when R is unset; own = its peak over B);
- the **train step** reserved ``workers`` x ``threads_per_task`` cores for its wall time: what
  the tasks did not use (idle) is shared, and so is the workers' memory outside the tasks'
  own: each task's B x its wall, the mean B x idle worker time (workers x wall - the tasks'
  wall), and the rest of the reservation the idle workers held, max(R - B, 0) x idle time.
  So a worker is charged max(R, B + own) while it trains and max(R, B) while it idles, as
  OpenCost charges each container max(requested, used) for its life;
- the run's **other steps** (extract, check, package, register, release with its gates) are
  a 1-vCPU process with their peak memory, and the run's own process while the tasks train
  is charged what it used; all of it is shared too.

The shared cost is split over the run's segments by their share of direct (task) cost, as
OpenCost splits idle cost; earlier attempts of a task (a resumed run retrained it) are
``retry`` items of that segment, earlier attempts of a step are shared. A step attempt that
left no measurement (killed by SIGKILL or the OOM killer, or still running) is an item of its
own, ``detail="killed"`` (``"running"`` while it runs) with ``usd=None``: the run's total is a
lower bound and every measured figure stays known. Every item of a run
is dated at the run's end (or its last activity while it runs), so a run falls in one period
whole and its items add up to it. A missing measurement makes the amount unknown (None),
never 0. Gates evaluated outside a run (``kiln watch``, ``kiln gates check``) are items of
their own, ``gate:<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache, partial
from typing import Any

import yaml

from kiln.config.base import parse_size
from kiln.monitoring.cost.model import GIB, CostItem, charge, compute_usd
from kiln.settings import Prices
from kiln.stores.metadata import RunRecord, StepRecord, TaskRecord
from kiln.stores.metadata.records import GateRecord

__all__ = ["RunCost", "cost_of_run", "gate_item", "requested_resources"]


@dataclass(frozen=True)
class RunCost:
    """The cost of one run: its total (None: a measurement is missing, see ``unknown``), per
    segment (its task, its share and its retries), and the shared part of it."""

    run_id: str
    pipeline: str
    version: int | None
    total_usd: float | None
    by_segment: dict[str, float | None]
    shared_usd: float | None
    unknown: list[str]
    notes: list[str] = field(default_factory=list)
    """Approximations taken (e.g. a task without its worker's base memory: its peak is
    counted)."""
    items: list[CostItem] = field(default_factory=list)
    at: datetime | None = None


@dataclass
class _Charged:
    """Charged vCPU-seconds and GiB-seconds; None: unknown."""

    cpu: float | None = 0.0
    memory: float | None = 0.0

    def add(self, cpu: float | None, memory: float | None) -> None:
        self.cpu = None if self.cpu is None or cpu is None else self.cpu + cpu
        self.memory = None if self.memory is None or memory is None else self.memory + memory


@dataclass(frozen=True)
class _Reserved:
    """What one task of the run reserved, and how many ran at once."""

    workers: int | None
    threads: float
    memory: int | None


def cost_of_run(
    prices: Prices, run: RunRecord, steps: list[StepRecord], tasks: list[TaskRecord]
) -> RunCost:
    """The cost of ``run`` from its steps and tasks (as their repositories order them)."""
    unknown: list[str] = []
    notes: list[str] = []
    at = _run_end(run, steps, tasks)
    train = next((s for s in steps if s.name == "train"), None)
    reserved = _reserved(run, train, notes)
    direct: dict[str, _Charged] = {}
    retry: dict[str, _Charged] = {}
    for task in tasks:
        direct[task.segment] = _task(_usage(task), reserved, notes, task.segment, unknown)
        if task.earlier_attempts:
            retry[task.segment] = _Charged()
            for n, attempt in enumerate(task.earlier_attempts, 1):
                c = _task(attempt, reserved, notes, f"{task.segment} attempt {n}", unknown)
                retry[task.segment].add(c.cpu, c.memory)
    shared, lost = _shared(run, steps, tasks, direct, retry, reserved, unknown, notes)
    cost = _split(prices, run, at, direct, retry, shared, unknown, notes)
    for detail in lost:
        cost.items.append(_item(prices, detail, _Charged(None, None), pipeline=run.pipeline,
                                at=at, run_id=run.id, version=run.model_version))  # fmt: skip
    if lost:
        cost = replace(cost, total_usd=None)
    return cost


def gate_item(prices: Prices, gate: GateRecord) -> CostItem:
    """A gate evaluated outside a run, ``gate:<name>``: a 1-vCPU process with its peak memory."""
    used = _Charged(*_process(gate.wall_seconds, gate.cpu_seconds, gate.peak_memory_bytes))
    return _item(prices, f"gate:{gate.gate}", used, pipeline=gate.pipeline,
                 at=gate.evaluated_at, version=gate.version)  # fmt: skip


def _usage(task: TaskRecord) -> dict[str, Any]:
    return {
        "wall_seconds": task.wall_seconds,
        "cpu_seconds": task.cpu_seconds,
        "peak_memory_bytes": task.peak_memory_bytes,
        "base_memory_bytes": task.base_memory_bytes,
    }


def _task(
    usage: dict[str, Any], reserved: _Reserved, notes: list[str], what: str, unknown: list[str]
) -> _Charged:
    wall, cpu, peak = (usage.get(k) for k in ("wall_seconds", "cpu_seconds", "peak_memory_bytes"))
    if wall is None or cpu is None or peak is None:
        unknown.append(f"{what}: its usage was not measured")
        return _Charged(None, None)
    base = usage.get("base_memory_bytes")
    if base is None:
        notes.append(f"{what}: no worker base memory (an older run): its whole peak is counted")
    own = peak if base is None else max(0, peak - base)
    # resources.memory limits the worker process: its base fills part of it
    limit = None if reserved.memory is None else max(0, reserved.memory - (base or 0))
    cpu_s, memory = charge(
        wall_seconds=wall, cpu_seconds=cpu, memory_bytes=own,
        requested_cpus=reserved.threads, requested_memory_bytes=limit,
    )  # fmt: skip
    return _Charged(cpu_s, memory)


def _shared(  # noqa: PLR0917 (the parts of one run's shared cost)
    run: RunRecord,
    steps: list[StepRecord],
    tasks: list[TaskRecord],
    direct: dict[str, _Charged],
    retry: dict[str, _Charged],
    reserved: _Reserved,
    unknown: list[str],
    notes: list[str],
) -> tuple[_Charged, list[str]]:
    """Idle reserved cores and memory, the workers' base memory, the run's process while it
    trains and its other steps (every attempt of each); and the detail of an item of its own
    for each step attempt that left no measurement (its wall time is unknown: it is left out
    of the train step's wall, so the rest stays known)."""
    shared = _Charged()
    lost: list[str] = []
    train_wall = 0.0
    for step in steps:
        earlier = len(step.earlier_attempts or ())
        for n, attempt in enumerate(_attempts(step)):
            what = f"step {step.name}" + (f" attempt {n + 1}" if n < earlier else "")
            wall, cpu, peak = (
                attempt["wall_seconds"],
                attempt["cpu_seconds"],
                attempt["peak_memory_bytes"],
            )
            if wall is None or cpu is None or peak is None:
                running = n == earlier and step.status == "running" and run.status == "running"
                unknown.append(
                    f"{what}: not measured (left {attempt['status']}: it still runs or was killed)"
                )
                lost.append("running" if running else "killed")
                continue
            if step.name == "train":  # the run's own process, beside its workers
                shared.add(cpu, peak / GIB * wall)
                train_wall += wall
            else:
                shared.add(*_process(wall, cpu, peak))
    if not any(s.name == "train" for s in steps) or train_wall == 0.0:
        return shared, lost
    if reserved.workers is None:
        unknown.append("train step: the number of workers was not recorded")
        shared.add(None, None)
        return shared, lost
    charged = _Charged()
    for c in [*direct.values(), *retry.values()]:
        charged.add(c.cpu, c.memory)
    reserved_cpu = reserved.workers * reserved.threads * train_wall
    shared.add(None if charged.cpu is None else max(0.0, reserved_cpu - charged.cpu), 0.0)
    attempts = [a for t in tasks for a in _task_attempts(t)]
    busy = sum(a.get("wall_seconds") or 0.0 for a in attempts)
    idle = max(0.0, reserved.workers * train_wall - busy)
    measured = [a for a in attempts if a.get("base_memory_bytes") is not None]
    base = 0.0
    if measured:  # each task's worker base while it trained, their mean while idle
        base = sum(a["base_memory_bytes"] for a in measured) / len(measured)
        held = sum(a["base_memory_bytes"] * (a.get("wall_seconds") or 0.0) for a in measured)
        shared.add(0.0, (held + base * idle) / GIB)
    elif tasks:
        notes.append("no worker base memory was measured: the tasks' peaks include it")
    if reserved.memory is not None:  # the rest of the reservation the idle workers held
        shared.add(0.0, max(0.0, reserved.memory - base) / GIB * idle)
    return shared, lost


def _attempts(step: StepRecord) -> list[dict[str, Any]]:
    current = {
        "status": step.status,
        "wall_seconds": step.wall_seconds,
        "cpu_seconds": step.cpu_seconds,
        "peak_memory_bytes": step.peak_memory_bytes,
    }
    return [*(step.earlier_attempts or []), current]


def _task_attempts(task: TaskRecord) -> list[dict[str, Any]]:
    """The usage of each attempt of a task, earlier ones first."""
    return [*(task.earlier_attempts or []), _usage(task)]


def _process(
    wall: float | None, cpu: float | None, peak: int | None
) -> tuple[float | None, float | None]:
    """A 1-vCPU process with its peak memory, for as long as it ran."""
    if wall is None or cpu is None or peak is None:
        return None, None
    return charge(
        wall_seconds=wall, cpu_seconds=cpu, memory_bytes=peak,
        requested_cpus=1.0, requested_memory_bytes=None,
    )  # fmt: skip


def _reserved(run: RunRecord, train: StepRecord | None, notes: list[str]) -> _Reserved:
    """Workers and threads per task (the train step's details), memory per task (config)."""
    cpus, memory = requested_resources(run.config_text)
    details = train.details if train is not None else {}
    workers = details.get("workers")
    threads = details.get("threads_per_task")
    if train is not None and workers is None:
        workers = cpus
        if cpus is not None:
            notes.append(f"workers not recorded (an older run): resources.cpus = {cpus} assumed")
    if threads is None:
        threads = max(1, cpus // workers) if cpus and workers else 1
    return _Reserved(workers, float(threads), memory)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@lru_cache(maxsize=4096)
def requested_resources(config_text: str) -> tuple[int | None, int | None]:
    """``resources.cpus`` and ``resources.memory`` (bytes) of a run's kiln.yaml (None: not set,
    or not readable: the run's config was validated when it ran). Cached by text: a
    pipeline's runs share few configs, and a cost read over a page of the catalogue reads
    thousands of runs."""
    try:
        data = yaml.load(config_text, Loader=_LOADER)
    except yaml.YAMLError:
        return None, None
    found = data.get("resources") if isinstance(data, dict) else None
    resources = found if isinstance(found, dict) else {}
    cpus = resources.get("cpus")
    try:
        memory = None if resources.get("memory") is None else parse_size(resources["memory"])
    except ValueError:
        memory = None
    return (cpus if isinstance(cpus, int) and cpus > 0 else None), memory


def _run_end(run: RunRecord, steps: list[StepRecord], tasks: list[TaskRecord]) -> datetime:
    """When the run ended, or its last activity while it runs."""
    if run.finished_at is not None:
        return run.finished_at
    moments = [run.started_at, *(t.finished_at for t in tasks)]
    for s in steps:
        moments += [m for m in (s.started_at, s.finished_at) if m is not None]
    return max(moments)


def _split(  # noqa: PLR0917 (one run's parts)
    prices: Prices,
    run: RunRecord,
    at: datetime,
    direct: dict[str, _Charged],
    retry: dict[str, _Charged],
    shared: _Charged,
    unknown: list[str],
    notes: list[str],
) -> RunCost:
    """Items per segment: its task, its share of ``shared`` (by direct cost), its retries."""
    item = partial(
        _item, prices, pipeline=run.pipeline, at=at, run_id=run.id, version=run.model_version
    )
    items: list[CostItem] = []
    weights = {seg: _usd(prices, c) for seg, c in direct.items()}
    known = [w for w in weights.values() if w is not None]
    total_weight = sum(known) if len(known) == len(weights) else None
    for seg, c in direct.items():
        items.append(item("task", c, segment=seg))
        share = _share(weights[seg], total_weight, len(direct))
        cpu = None if share is None or shared.cpu is None else shared.cpu * share
        memory = None if share is None or shared.memory is None else shared.memory * share
        items.append(item("shared", _Charged(cpu, memory), segment=seg))
        if seg in retry:
            items.append(item("retry", retry[seg], segment=seg))
    if not direct:  # nothing trained (failed before, skipped as unchanged): the run's own cost
        items.append(item("shared", shared))
    by_segment: dict[str, float | None] = {}
    for i in items:
        if i.segment is not None:
            prev = by_segment.get(i.segment, 0.0)
            by_segment[i.segment] = None if prev is None or i.usd is None else prev + i.usd
    return RunCost(
        run_id=run.id,
        pipeline=run.pipeline,
        version=run.model_version,
        total_usd=_sum(i.usd for i in items),
        by_segment=by_segment,
        shared_usd=_usd(prices, shared),
        unknown=unknown,
        notes=sorted(set(notes)),
        items=items,
        at=at,
    )


def _share(weight: float | None, total: float | None, count: int) -> float | None:
    """A segment's share of the shared cost: its share of the direct cost (evenly when the
    tasks cost nothing; None when one's cost is unknown)."""
    if weight is None or total is None:
        return None
    return weight / total if total > 0 else 1 / count


def _usd(prices: Prices, c: _Charged) -> float | None:
    if c.cpu is None or c.memory is None:
        return None
    return sum(compute_usd(prices, c.cpu, c.memory, training=True))


def _sum(values: Any) -> float | None:
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def _item(
    prices: Prices,
    detail: str,
    c: _Charged,
    *,
    pipeline: str,
    at: datetime,
    run_id: str | None = None,
    version: int | None = None,
    segment: str | None = None,
) -> CostItem:
    cpu_usd = memory_usd = None
    if c.cpu is not None and c.memory is not None:
        cpu_usd, memory_usd = compute_usd(prices, c.cpu, c.memory, training=True)
    return CostItem(
        pipeline=pipeline, kind="training", detail=detail, at=at,
        usd=None if cpu_usd is None or memory_usd is None else cpu_usd + memory_usd,
        cpu_usd=cpu_usd, memory_usd=memory_usd, run_id=run_id, version=version,
        segment=segment, cpu_seconds=c.cpu, memory_gib_seconds=c.memory,
    )  # fmt: skip
