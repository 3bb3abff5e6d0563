"""Replay benchmark: the replay gate end to end on 100,000 captured requests against the
in-process floor, one run.

    python bench/replay.py [--repeat 5] [--rows 100000] [--home DIR]

It builds the flights warehouse when it is missing, trains the demo pipeline
(examples/flights/kiln.yaml) twice into a temporary home (``--home`` keeps and reuses it): v1
as configured, v2 with other trees (``n_estimators`` 250). v1 goes to production, and
``--rows`` requests are captured as the server captures them: real flights of the second half
of 2013 (the demo's features, as JSON-ready rows), v1's real answers from
``Predictor.predict(rows)``, written by a ``CaptureWriter``.

Timed, interleaved in each of ``--repeat`` rounds (every figure is the median of the rounds):

  * floor: ``v2.predictor.predict(df)`` on the same rows, already a DataFrame in this process;
  * ``read_captures`` of the last ``--rows`` production requests (DuckDB over Parquet);
  * ``replay()`` on that table: parse the features JSON, check every request against v2's
    schema as the server would, predict in one batch, compare with v1's answers;
  * ``ReplayGate.evaluate`` end to end with ``window = --rows`` (a fresh GateContext each
    round: the captures are read again; the package is loaded once, as a Version caches it).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "flights"))
sys.path.insert(0, str(ROOT))

from build_warehouse import build  # noqa: E402

CONFIG = ROOT / "examples" / "flights" / "kiln.yaml"
WAREHOUSE = ROOT / "examples" / "flights" / "warehouse.duckdb"
PIPELINE = "flights-delay"


def train(home: Path) -> None:
    """v1 (the demo pipeline) and v2 (other trees) into ``home``, unless it has them."""
    from kiln.config import load_config
    from kiln.registry import Stages
    from kiln.runs import Runner
    from kiln.settings import Settings
    from kiln.stores import open_stores

    settings = Settings(home=home)
    stores = open_stores(settings, upgrade=True)
    try:
        with stores.metadata.unit_of_work() as uow:
            have = len(uow.versions.list(PIPELINE))
        base = yaml.safe_load(CONFIG.read_text())
        base["data"]["source"] = str(WAREHOUSE)
        for number in range(have + 1, 3):
            data = yaml.safe_load(yaml.safe_dump(base))
            if number == 2:
                data["model"]["params"]["n_estimators"] = 250
            path = home / f"kiln.v{number}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            t0 = time.perf_counter()
            result = Runner(settings, stores).run(load_config(path))
            print(f"  trained v{result.version} in {time.perf_counter() - t0:.0f} s", flush=True)
        Stages(stores.metadata).promote(PIPELINE, 1, actor="bench", reason="benchmark")
    finally:
        stores.close()


def flights(names: list[str], n: int) -> Any:
    """``n`` real flights of the second half of 2013 (the ``names`` columns), a DataFrame."""
    import duckdb

    with duckdb.connect(str(WAREHOUSE), read_only=True) as con:
        return con.execute(
            f"SELECT {', '.join(names)} FROM flights WHERE month >= 7 ORDER BY flight_id LIMIT {n}"
        ).df()


def json_rows(df: Any) -> list[dict[str, Any]]:
    """The rows as a caller sends them: Python numbers and strings, null for missing."""
    import numpy as np

    rows = []
    for record in df.to_dict("records"):
        row = {}
        for k, raw in record.items():
            value = raw.item() if isinstance(raw, np.generic) else raw
            row[k] = None if isinstance(value, float) and math.isnan(value) else value
        rows.append(row)
    return rows


def capture(root: str, version: Any, rows: list[dict[str, Any]]) -> None:
    """What the server captures when ``version`` in production answers ``rows``."""
    from kiln.stores import CaptureRecord, CaptureWriter

    prediction = version.predictor.predict(rows)
    start = datetime.now(UTC)
    col = version.predictor.segment_column
    with CaptureWriter(root, writer_id="bench", max_queue=len(rows) + 1) as writer:
        for i, row in enumerate(rows):
            segment = row.get(col) if col else None
            writer.offer(
                CaptureRecord(
                    request_id=f"bench-{i:07d}",
                    ts=start + timedelta(microseconds=i),
                    pipeline=PIPELINE,
                    version=version.number,
                    stage="production",
                    segment=None if segment is None else str(segment),
                    model=prediction.model[i],
                    fallback=bool(prediction.fallback[i]),
                    features=row,
                    prediction=float(prediction.values[i]),
                    error=None,
                    latency_ms=1.0,
                )
            )
    if writer.written != len(rows):
        raise SystemExit(f"only {writer.written} of {len(rows)} captures were written")


def measure(stores: Any, v1: Any, v2: Any, df: Any, root: str, repeat: int) -> tuple[Any, Any]:
    """Median seconds of the floor, read_captures, replay() and the gate; the last result."""
    from kiln.gates.base import GateContext, allowed_range
    from kiln.gates.replay import ReplayGate, replay
    from kiln.stores import read_captures

    n = len(df)
    replay_policy = v2.policy.gates.replay.model_copy(update={"window": n})
    policy = v2.policy.model_copy(
        update={"gates": v2.policy.gates.model_copy(update={"replay": replay_policy})}
    )
    lo, hi = allowed_range(v2)
    gate = ReplayGate()
    v2.predictor.predict(df.head(100))  # load the package and warm the model up
    times: dict[str, list[float]] = {"floor": [], "read": [], "replay": [], "gate": []}
    result = None
    for i in range(repeat):
        t0 = time.perf_counter()
        v2.predictor.predict(df)
        times["floor"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        table = read_captures(root, PIPELINE, stage="production", last=n)
        times["read"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        report = replay(v2.predictor, table, lo=lo, hi=hi, max_abs_diff=replay_policy.max_abs_diff)
        times["replay"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        result = gate.evaluate(v2, v1, GateContext(stores, root, policy))
        times["gate"].append(time.perf_counter() - t0)
        if report.replayed != n or result.evidence.get("replayed") != n:
            raise SystemExit(f"replayed {report.replayed} and {result.evidence.get('replayed')}")
        print(
            f"  repeat {i + 1}: floor {times['floor'][-1]:.2f}s, read {times['read'][-1]:.2f}s,"
            f" replay() {times['replay'][-1]:.2f}s, gate {times['gate'][-1]:.2f}s",
            flush=True,
        )
    return {k: statistics.median(v) for k, v in times.items()}, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--home", type=Path, help="keep the trained versions here (reused)")
    args = ap.parse_args()

    from kiln.registry.version import Version
    from kiln.settings import Settings
    from kiln.stores import open_stores

    if not WAREHOUSE.exists():
        build(WAREHOUSE)
    tmp = tempfile.TemporaryDirectory(prefix="kiln-bench-")
    home = args.home or Path(tmp.name) / "home"
    home.mkdir(parents=True, exist_ok=True)
    print(f"training the demo pipeline into {home} (reused when it has v1 and v2)", flush=True)
    train(home)

    stores = open_stores(Settings(home=home))
    with stores.metadata.unit_of_work() as uow:
        v1, v2 = (Version(stores, uow.versions.get(PIPELINE, n)) for n in (1, 2))
    df = flights(v2.features, args.rows)
    n = len(df)
    # Each run gets its own capture folder, so that --home runs do not pile up captures.
    root = str(Path(tmp.name) / "captures")
    t0 = time.perf_counter()
    capture(root, v1, json_rows(df))
    print(f"  captured {n:,} requests answered by v1 in {time.perf_counter() - t0:.1f} s")
    med, result = measure(stores, v1, v2, df, root, args.repeat)
    stores.close()

    floor = med["floor"]
    print(
        f"\nreplay gate on {n:,} captured requests ({PIPELINE} v2 against v1's answers),"
        f" {os.cpu_count()} cores, medians of {args.repeat}"
    )
    print(f"  {'':58s} {'seconds':>8s} {'rows/s':>10s} {'ratio':>7s}")
    lines = [
        ("floor: v2.predictor.predict(df), rows already a DataFrame", "floor"),
        ("read_captures: last K production requests (DuckDB)", "read"),
        ("replay(): parse JSON, check as the server, predict, compare", "replay"),
        ("ReplayGate.evaluate end to end (read + replay + evidence)", "gate"),
    ]
    for label, key in lines:
        ratio = f"{med[key] / floor:6.2f}x" if key != "read" else ""
        print(f"  {label:58s} {med[key]:8.2f} {n / med[key]:10,.0f} {ratio:>7s}")
    overhead = med["gate"] - floor
    print(
        f"  gate overhead over the floor: {overhead:.2f} s ({overhead / n * 1e6:.1f} us/request);"
        f" target <= 5 s end to end: {'met' if med['gate'] <= 5 else 'NOT met'}"
    )
    if result is not None:
        print(f"  gate: {result.status}: {result.summary}")


if __name__ == "__main__":
    main()
