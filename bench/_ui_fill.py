"""Fill a metadata store with a registry at scale through Kiln's own repositories, one unit of
work per pipeline: runs (spread over the last ``days``) with steps, tasks for the latest runs,
versions with small real-looking metrics and lineage, gate results (some failed), deployments
and audit events of each promotion, hourly monitor windows, a few alerts.

Pipeline ``i`` (``p0000``..): owner ``owner-(i % 20)``; its latest version's stage cycles
production / blocked (replay failed; production the one before) / shadow / candidate (gates
pending); its monitoring cycles ok / warn / alert / no traffic / not monitored yet.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from kiln.stores import MetadataStore
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.store import UnitOfWork

OWNERS = 20
SEGMENTS = ("JFK", "LGA", "EWR", "BOS")
LATEST = ("production", "blocked", "shadow", "candidate")
MONITOR = ("ok", "warn", "alert", "no_traffic", None)
CONFIG = """name: {name}
owner: {owner}
data: {{source: warehouse, table: flights}}
target: arr_delay
segments: [origin]
model: {{kind: lightgbm, params: {{num_leaves: 31}}}}
resources: {{cpus: 1, memory: 2GiB}}
"""


def name_of(i: int) -> str:
    return f"p{i:04d}"


def fill(
    metadata: MetadataStore,
    pipelines: int,
    versions: int,
    *,
    days: float = 50.0,
    progress: bool = True,
) -> None:
    """Add the pipelines that are not there yet (an interrupted fill resumes)."""
    now = datetime.now(UTC)
    with metadata.read() as uow:
        done = {p.name for p in uow.pipelines.list()}
    started = time.perf_counter()
    for i in range(pipelines):
        if name_of(i) in done:
            continue
        with metadata.unit_of_work() as uow:
            _pipeline(uow, i, versions, now, days)
        if progress and i % 50 == 49:
            print(f"  {i + 1} pipelines, {time.perf_counter() - started:.0f} s", flush=True)


def _metrics(rng: random.Random) -> dict[str, Any]:
    per = {s: {"mae": round(rng.uniform(8, 14), 3), "rows": rng.randint(2000, 9000)}
           for s in SEGMENTS}  # fmt: skip
    return {
        "primary": "mae",
        "segments": len(SEGMENTS),
        "overall": {"mae": 11.2},
        "per_segment": per,
    }


def _pipeline(uow: UnitOfWork, i: int, versions: int, now: datetime, days: float) -> None:
    rng = random.Random(i)
    name, owner = name_of(i), f"owner-{i % OWNERS}"
    latest_stage = LATEST[i % len(LATEST)]
    config = CONFIG.format(name=name, owner=owner)
    uow.pipelines.upsert(name, owner, f"arrival delays by origin, model {i}", f"{name}/kiln.yaml")
    production = versions if latest_stage == "production" else versions - 1
    step = timedelta(days=days / versions)
    dates: list[dict[str, Any]] = []
    for v in range(1, versions + 1):
        started = now - step * (versions - v) - timedelta(minutes=30)
        trigger = "schedule" if v % 7 else "manual"
        run = uow.runs.create(name, trigger, config, f"{v:064x}", f"{name}/kiln.yaml", "bench", 1)
        stage = latest_stage if v == versions else "production" if v == production else "archived"
        lineage = {"config_digest": f"{v:064x}", "data_digest": f"{v * 7:064x}",
                   "code_revision": "a1b2c3d", "rows": {"train": 40000, "holdout": 9000}}  # fmt: skip
        uow.versions.register(name, run.id, f"{v:064x}", _metrics(rng), lineage, stage)  # type: ignore[arg-type]
        finished = started + timedelta(minutes=12)
        dates.append({"rid": run.id, "started": started, "finished": finished, "v": v})
        failed = stage == "blocked" or rng.random() < 0.05
        pending = stage == "candidate"
        if versions - v < 10:
            uow.gates.record(name, v, "data", "passed", "no check failed", {"checks": 6})
        uow.gates.record(
            name, v, "replay", "pending" if pending else ("failed" if failed else "passed"),
            "mae worse in JFK by 4.1%" if failed else "no segment worse",
            {"failing_segments": ["JFK"] if failed else [], "requests": 5000},
        )  # fmt: skip
        if (stage in ("production", "archived") and v % 5 == 0) or v == production:
            uow.deployments.record(name, v, "promote", actor="scheduler", from_version=v - 1)
            uow.audit.record("scheduler", "promote", name, v, None, {"from": v - 1})
        if versions - v < 5:
            _steps(uow, run.id, rng)
        if versions - v < 3:
            _tasks(uow, run.id, started, rng)
    _backdate(uow, dates)
    _monitor(uow, i, name, now)


def _backdate(uow: UnitOfWork, dates: list[dict[str, Any]]) -> None:
    """Spread the runs over the past (the repositories stamp ``now``): one executemany in the
    same unit of work, the run finished and its version registered at its end."""
    runs = t.table_of(t.Run)
    uow.runs._session.execute(
        sa.update(runs)
        .where(runs.c.id == sa.bindparam("rid"))
        .values(status="succeeded", started_at=sa.bindparam("started"),
                finished_at=sa.bindparam("finished"), model_version=sa.bindparam("v")),
        dates,
    )  # fmt: skip


def _steps(uow: UnitOfWork, run_id: str, rng: random.Random) -> None:
    for step in ("extract", "train", "release"):
        uow.steps.start(run_id, step)
        uow.steps.finish(run_id, step, "succeeded", wall_seconds=rng.uniform(5, 60),
                         cpu_seconds=rng.uniform(5, 100), peak_memory_bytes=600 << 20)  # fmt: skip


def _tasks(uow: UnitOfWork, run_id: str, started: datetime, rng: random.Random) -> None:
    for s in SEGMENTS:
        uow.tasks.record(
            run_id, s, status="succeeded", started_at=started,
            finished_at=started + timedelta(minutes=2), wall_seconds=rng.uniform(5, 60),
            cpu_seconds=rng.uniform(5, 100), peak_memory_bytes=400 << 20, rows_train=8000,
            rows_holdout=2000, metrics={"mae": round(rng.uniform(8, 14), 3)},
            artifact_digest=f"{rng.getrandbits(256):064x}", error=None,
            log=f"training {s}: 8000 rows, 120 trees\n",
        )  # fmt: skip


def _monitor(uow: UnitOfWork, i: int, name: str, now: datetime) -> None:
    state = MONITOR[i % len(MONITOR)]
    if state is None:
        return
    hour = now.replace(minute=0, second=0, microsecond=0)
    for h in range(24, 0, -1):
        start = hour - timedelta(hours=h)
        worst = "drift:temp" if state in ("warn", "alert") else None
        finding = {"check": "drift:temp", "feature": "temp", "segment": "JFK", "value": 0.31,
                   "threshold": 0.25, "details": {"statistic": "psi"}}  # fmt: skip
        summary = {"findings": [finding] if worst else []}
        uow.windows.store(
            name, start, start + timedelta(hours=1), 3600, 1200, state, worst, summary
        )
    if state == "alert" and i % 25 == 2:
        alert = uow.alerts.start(name, "drift:temp", "drift", "alert", hour, 0.31, 0.25,
                                 "temp drifted in JFK (psi 0.31 >= 0.25)")  # fmt: skip
        if alert is not None:
            uow.alerts.open(alert.id, now)
