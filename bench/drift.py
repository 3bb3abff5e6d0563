"""Drift benchmark, in one run: (a) drift maths on real flights against a plain numpy floor and
Evidently's DataDriftPreset; (b) one monitor pass over a million captured requests.

    python bench/drift.py [--repeat 3] [--rows 1000000]

(a) Reference: the flights of January-June (~170k rows); current: July-December; 8 numeric and
2 categorical features; PSI on 10 quantile bins of the reference, overall and per destination
(the 100 busiest). Each contender computes the reference histograms, the current counts and the
statistic from data in memory: Kiln with ``kiln.pipeline.histograms`` / ``drift``, the floor
with a bare ``np.quantile`` / ``searchsorted`` / ``bincount`` loop, Evidently (0.7, with
``method="psi"``) in its own environment (``make bench-evidently``; it needs pandas < 3) as a
subprocess that times its own ``Report.run`` calls the same way (its import apart).
(b) Captures: the July-December flights (100 busiest destinations as segments, 16 features of
examples/flights/kiln.dest.yaml, typed as the server stores them) written by Kiln's
CaptureWriter as real Parquet files over four days; the reference of a version trained on
January-June. ``window_drift`` over one day (rows/4) and over four days (rows), each in a fresh
process: seconds and peak RSS. Medians of ``--repeat``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "flights"))

from build_warehouse import build  # noqa: E402

from kiln.pipeline.drift import psi  # noqa: E402
from kiln.pipeline.histograms import (  # noqa: E402
    bin_counts,
    category_counts,
    category_counts_at,
    numeric_histograms,
)

WAREHOUSE = ROOT / "examples" / "flights" / "warehouse.duckdb"
EVIDENTLY = ROOT / ".venv-evidently" / "bin" / "python"
NUMERIC = ["temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib", "distance"]
TEXT = ["carrier", "origin"]
SEGMENTS = 100
DECILES = np.arange(1, 10) / 10


def flights(where: str) -> pd.DataFrame:
    cols = ", ".join([*NUMERIC, *TEXT, "dest"])
    with duckdb.connect(str(WAREHOUSE), read_only=True) as con:
        busiest = "SELECT dest FROM flights GROUP BY dest ORDER BY count(*) DESC LIMIT ?"
        sql = f"SELECT {cols} FROM flights WHERE ({where}) AND dest IN ({busiest})"
        return con.sql(sql, params=[SEGMENTS]).df()


def encode(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, Any]:
    """Both sides as arrays: numeric float64, categories as codes of the reference's."""
    out: dict[str, Any] = {}
    for side, df in (("ref", ref), ("cur", cur)):
        out[side] = np.asfortranarray(df[NUMERIC].to_numpy(dtype=np.float64))
    for name in TEXT:
        cats = pd.Index(sorted(ref[name].dropna().unique()))
        out[f"ref_{name}"] = cats.get_indexer(ref[name]).astype(np.float64)
        out[f"cur_{name}"] = cats.get_indexer(cur[name]).astype(np.float64)
        out[f"n_{name}"] = len(cats)
    dests = pd.Index(sorted(ref["dest"].unique()))
    out["ref_seg"] = dests.get_indexer(ref["dest"])
    out["cur_seg"] = dests.get_indexer(cur["dest"])
    out["segments"] = len(dests)
    return out


def _slices(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(codes, kind="stable")
    return order, np.searchsorted(codes[order], np.arange(n + 1))


def kiln_maths(d: dict[str, Any], per_segment: bool) -> list[float]:
    """PSI of every feature (of every segment), with Kiln's pipeline functions."""
    groups = [(slice(None), slice(None))]
    ref_num, cur_num = d["ref"], d["cur"]
    ref_cat = {n: d[f"ref_{n}"] for n in TEXT}
    cur_cat = {n: d[f"cur_{n}"] for n in TEXT}
    if per_segment:
        (ro, rb), (co, cb) = (
            _slices(d["ref_seg"], d["segments"]),
            _slices(d["cur_seg"], d["segments"]),
        )
        ref_num, cur_num = ref_num[ro], cur_num[co]
        ref_cat = {n: v[ro] for n, v in ref_cat.items()}
        cur_cat = {n: v[co] for n, v in cur_cat.items()}
        groups = [(slice(rb[i], rb[i + 1]), slice(cb[i], cb[i + 1])) for i in range(d["segments"])]
    out = []
    for r, c in groups:
        for j, hist in enumerate(numeric_histograms(ref_num[r], 10)):
            out.append(float(psi(hist.counts, bin_counts(cur_num[c, j], hist.edges)[0])))
        for name in TEXT:
            ref = category_counts(ref_cat[name][r], d[f"n_{name}"], 20)
            cur = category_counts_at(cur_cat[name][c], ref.codes, d[f"n_{name}"])
            out.append(float(psi(ref.counts, cur.counts)))
    return out


def numpy_floor(d: dict[str, Any], per_segment: bool) -> list[float]:
    """The same PSI with bare numpy: quantile edges, searchsorted, bincount."""

    def one(r: np.ndarray, c: np.ndarray, edges: np.ndarray) -> float:
        rc = np.bincount(np.searchsorted(edges, r, side="right"), minlength=len(edges) + 1)
        cc = np.bincount(np.searchsorted(edges, c, side="right"), minlength=len(edges) + 1)
        rp = np.clip(rc / max(rc.sum(), 1), 1e-4, None)
        cp = np.clip(cc / max(cc.sum(), 1), 1e-4, None)
        return float(np.sum((cp - rp) * np.log(cp / rp)))

    groups = [(np.arange(len(d["ref_seg"])), np.arange(len(d["cur_seg"])))]
    if per_segment:
        rg = pd.Series(d["ref_seg"]).groupby(d["ref_seg"]).indices
        cg = pd.Series(d["cur_seg"]).groupby(d["cur_seg"]).indices
        groups = [(rg[k], cg.get(k, np.empty(0, dtype=np.intp))) for k in rg]
    out = []
    for ri, ci in groups:
        for j in range(len(NUMERIC)):
            r, c = d["ref"][ri, j], d["cur"][ci, j]
            r, c = r[~np.isnan(r)], c[~np.isnan(c)]
            edges = np.unique(np.quantile(r, DECILES)) if len(r) else np.empty(0)
            out.append(one(r, c, edges))
        for name in TEXT:
            r, c = d[f"ref_{name}"][ri], d[f"cur_{name}"][ci]
            edges = np.arange(d[f"n_{name}"]) + 0.5  # one bin per code; -1 (unseen) first
            out.append(one(r[~np.isnan(r)], c[~np.isnan(c)], edges))
    return out


EVIDENTLY_SCRIPT = """
import json, sys, time, statistics
import pandas as pd
t0 = time.perf_counter()
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
imported = time.perf_counter() - t0
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
num, cat, repeat = json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
def run(r, c):
    report = Report([DataDriftPreset(method="psi")])
    report.run(Dataset.from_pandas(c[num + cat], data_definition=definition),
               Dataset.from_pandas(r[num + cat], data_definition=definition))
def timed(fn):
    out = []
    for _ in range(repeat):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return statistics.median(out)
rg, cg = dict(tuple(ref.groupby("dest"))), dict(tuple(cur.groupby("dest")))
overall = timed(lambda: run(ref, cur))
repeat = 1  # about 100 reports: minutes each time
segments = timed(lambda: [run(rg[k], cg[k]) for k in rg if k in cg])
print(json.dumps({"import": imported, "overall": overall, "segments": segments}))
"""


def evidently(ref: pd.DataFrame, cur: pd.DataFrame, repeat: int) -> dict[str, float] | None:
    if not EVIDENTLY.exists():
        print("  Evidently: skipped, its environment is absent (make bench-evidently builds it)")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        ref.to_parquet(f"{tmp}/ref.parquet")
        cur.to_parquet(f"{tmp}/cur.parquet")
        args = [json.dumps(NUMERIC), json.dumps(TEXT), str(repeat)]
        done = subprocess.run(
            [str(EVIDENTLY), "-c", EVIDENTLY_SCRIPT, f"{tmp}/ref.parquet", f"{tmp}/cur.parquet",
             *args], capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        print(f"  Evidently failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def timed(fn: Callable[[], object], repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def part_a(repeat: int) -> None:
    ref, cur = flights("month <= 6"), flights("month > 6")
    d = encode(ref, cur)
    k = kiln_maths(d, False)
    f = numpy_floor(d, False)
    print(f"(a) {len(ref):,} reference x {len(cur):,} current flights, {len(NUMERIC)} numeric +"
          f" {len(TEXT)} categorical features, PSI; medians of {repeat}")  # fmt: skip
    print(f"    temp PSI January-June -> July-December: Kiln {k[0]:.3f}, numpy floor {f[0]:.3f}")
    rows = {}
    for label, seg in (("overall", False), (f"per {d['segments']} segments", True)):
        rows[label] = (timed(lambda s=seg: kiln_maths(d, s), repeat),
                       timed(lambda s=seg: numpy_floor(d, s), repeat))  # fmt: skip
    ev = evidently(ref, cur, repeat)
    for (label, (kiln, floor)), key in zip(rows.items(), ("overall", "segments"), strict=True):
        line = (
            f"    {label:16} Kiln {kiln:7.3f} s   numpy floor {floor:7.3f} s ({kiln / floor:.2f}x)"
        )
        if ev is not None:
            line += f"   Evidently {ev[key]:8.3f} s (Kiln {ev[key] / kiln:.0f}x faster)"
        print(line)
    if ev is not None:
        print(f"    (Evidently per segment: one run of ~100 reports; its import, not counted"
              f" above: {ev['import']:.2f} s)")  # fmt: skip


# -- (b) a monitor pass over captured requests ------------------------------------------------

DAY0 = datetime(2014, 1, 6, tzinfo=UTC)
PIPELINE = "flights-delay-by-dest"


def reference_and_types(dest_config: Path) -> tuple[dict[str, Any], Any, list[str]]:
    """The reference of a version trained on January-June (holdout predictions of a per-segment
    mean model: the bench times the monitor, not a model), and the capture's feature types."""
    import pyarrow as pa

    from kiln.config import load_config
    from kiln.runs.data import prepare
    from kiln.runs.reference import feature_reference, with_predictions
    from kiln.sources import open_source

    loaded = load_config(dest_config)
    cfg = loaded.config
    query = f"SELECT * FROM ({cfg.data.query}) WHERE month <= 6"
    df = open_source(cfg.data.source, base_dir=loaded.base_dir).read(query).to_pandas()
    prep = prepare(df, loaded)
    means = pd.Series(prep.y[~prep.holdout]).groupby(prep.segments[~prep.holdout]).mean()
    served = np.array(pd.Series(prep.segments).map(means).fillna(float(prep.y.mean())), float)
    served[~prep.holdout] = np.nan
    features = feature_reference(prep, refit=False, segmented=True)
    reference = with_predictions(features, prep, served, primary="mae")
    kinds = {"numeric": pa.float64(), "categorical": pa.string()}
    types = pa.struct([(f.name, kinds[f.kind]) for f in prep.schema.features])
    return reference, types, [f.name for f in prep.schema.features]


def write_captures(root: str, rows: int, types: Any, names: list[str]) -> float:
    """``rows`` captures of the July-December flights over four days, by the CaptureWriter."""
    from kiln.stores import CaptureWriter
    from kiln.stores.capture import CaptureRecord

    cols = ", ".join(names)
    with duckdb.connect(str(WAREHOUSE), read_only=True) as con:
        busiest = "SELECT dest FROM flights GROUP BY dest ORDER BY count(*) DESC LIMIT 100"
        sql = f"SELECT {cols} FROM flights WHERE month > 6 AND dest IN ({busiest})"
        data = con.sql(sql).df()
    for name, kind in zip(names, types, strict=True):
        if str(kind.type) == "double":
            data[name] = data[name].astype("float64")
    records = data.astype(object).where(data.notna(), None).to_dict("records")
    step = timedelta(days=4) / rows
    t0 = time.perf_counter()
    with CaptureWriter(
        root, writer_id="bench", max_queue=rows + 1, flush_rows=50_000,
        max_backlog_bytes=8 * 2**30,
    ) as writer:  # fmt: skip
        for i in range(rows):
            row = records[i % len(records)]
            ts = DAY0 + step * i
            writer.offer(CaptureRecord(
                request_id=f"r{i}", ts=ts, pipeline=PIPELINE, version=1, stage="production",
                segment=row["dest"], model=f"segment:{row['dest']}", fallback=False,
                features=row, prediction=float(i % 97), error=None, latency_ms=2.0, unseen=(),
                status=200, feature_types=types,
            ))  # fmt: skip
    return time.perf_counter() - t0


def one_pass(root: str, reference_file: str, days: int) -> None:
    """Child process: one window_drift pass; prints seconds and peak RSS as JSON."""
    from kiln.config.monitor import MonitorConfig
    from kiln.monitoring.drift import window_drift
    from kiln.stores.capture import open_window

    reference = json.loads(Path(reference_file).read_text())
    base = _peak_mb()
    t0 = time.perf_counter()
    with open_window(root, PIPELINE, start=DAY0, end=DAY0 + timedelta(days=days)) as window:
        report = window_drift(window, {1: reference}, MonitorConfig())
        rows = window.rows
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rows": rows, "features": len(report.features),
                      "peak_mb": _peak_mb(), "before_mb": base}))  # fmt: skip


def _peak_mb() -> float:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss``, not inherited across exec
    from the parent that holds the generated captures)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_b(rows: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reference, types, names = reference_and_types(ROOT / "examples/flights/kiln.dest.yaml")
        ref_file = Path(tmp) / "reference.json"
        ref_file.write_text(json.dumps(reference))
        wrote = write_captures(tmp, rows, types, names)
        files = list(Path(tmp, "captures").rglob("*.parquet"))
        print(f"\n(b) {rows:,} captured requests x {len(reference['segments']) - 1} segments x"
              f" {len(names)} features, {len(files)} Parquet files (CaptureWriter: {wrote:.0f} s);"
              f" one window_drift pass per fresh process, medians of {repeat}")  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        results = {}
        for days in (1, 4):
            runs = []
            for _ in range(repeat):
                done = subprocess.run(
                    [sys.executable, __file__, "--pass", tmp, str(ref_file), str(days)],
                    capture_output=True, text=True, check=True, env=env,
                )  # fmt: skip
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            results[days] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            r = results[days]
            print(f"    {int(r['rows']):>9,} rows: {r['seconds']:6.2f} s, peak RSS"
                  f" {r['peak_mb']:6.0f} MB ({r['peak_mb'] - r['before_mb']:5.0f} MB over the"
                  f" process before the pass), {int(r['features'])} drift rows")  # fmt: skip
        small, big = results[1], results[4]
        print(f"    4x the rows: {big['seconds'] / small['seconds']:.2f}x the time,"
              f" {(big['peak_mb'] - big['before_mb']) / max(small['peak_mb'] - small['before_mb'], 1):.2f}x"
              " the memory of the pass")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--pass", dest="one", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=["a", "b"], help="run one part")
    args = ap.parse_args()
    if args.one:
        one_pass(args.one[0], args.one[1], int(args.one[2]))
        return
    if not WAREHOUSE.exists():
        build(WAREHOUSE)
    print(f"{os.cpu_count()} cores")
    if args.only in (None, "a"):
        part_a(args.repeat)
    if args.only in (None, "b"):
        part_b(args.rows, args.repeat)


if __name__ == "__main__":
    main()
