"""Serving benchmark: the prediction server under load against the in-process floor, one run.

    python bench/serving.py [--repeat 3] [--seconds 5] [--client auto|wrk|python] [--home DIR]
                            [--only "single c=32,capture 0% c=32"]

It trains the demo pipeline (examples/flights/kiln.yaml) twice into a temporary home (``--home``
keeps and reuses it): v1 captures 100% of requests, v2 is the same pipeline with
``capture.sample_rate: 0``. Then it starts ``python -m kiln.serving --workers 2`` and a load
generator in its own process (wrk when installed, else a Python asyncio client) that sends real
flights rows of July 2013, a different row each request:

  * single rows at concurrency 1, 8 and 32, and 1,000-row batches (v1 in production);
  * capture at 100% (v1) against 0% (v2), single rows at concurrency 32 (throughput ratio);
  * shadow on (v1 in production, v2 in shadow, both captured) against off, single rows at
    concurrency 1 and 8 (production's p50, p99 and throughput).

The stages change on the running server through the registry (as a promotion does), and the
scenarios are interleaved in each of ``--repeat`` rounds of ``--seconds`` each; every figure is
the median of the rounds (``--only`` runs some of the scenarios, e.g. to compare two builds of
the server in a few minutes). Floor: ``Predictor.predict`` in this process, one row and 1,000 rows
(medians), on the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "flights"))
sys.path.insert(0, str(ROOT))

from build_warehouse import build  # noqa: E402

CONFIG = ROOT / "examples" / "flights" / "kiln.yaml"
WAREHOUSE = ROOT / "examples" / "flights" / "warehouse.duckdb"
PIPELINE = "flights-delay"
BATCH = 1_000

WRK_SCRIPT = r"""
local bodies = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  i = math.random(#bodies)
end
function request()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


# -- set-up ------------------------------------------------------------------------------------


def train(home: Path) -> None:
    """v1 (capture 100%) and v2 (capture 0%) of the demo pipeline, unless ``home`` has them."""
    from kiln.config import load_config
    from kiln.runs import Runner
    from kiln.settings import Settings
    from kiln.stores import open_stores

    settings = Settings(home=home)
    stores = open_stores(settings, upgrade=True)
    try:
        with stores.metadata.unit_of_work() as uow:
            have = len(uow.versions.list(PIPELINE))
        if have >= 2:
            return
        text = CONFIG.read_text()
        variant = text.replace("source: warehouse.duckdb", f"source: {WAREHOUSE}")
        variant = variant.replace("capture: {sample_rate: 1.0}", "capture: {sample_rate: 0.0}")
        if "sample_rate: 0.0" not in variant:
            raise SystemExit(f"{CONFIG} no longer says capture: {{sample_rate: 1.0}}")
        no_capture = home / "kiln.nocapture.yaml"
        no_capture.write_text(variant)
        for path in (CONFIG, no_capture)[have:]:
            t0 = time.perf_counter()
            result = Runner(settings, stores).run(load_config(path))
            print(f"  trained v{result.version} in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        stores.close()


def set_stages(home: Path, production: int, shadow: int | None) -> None:
    from kiln.registry import Stages
    from kiln.settings import Settings
    from kiln.stores import open_stores

    stores = open_stores(Settings(home=home))
    try:
        stages = Stages(stores.metadata)
        for v in stages.shadows(PIPELINE):
            if v.version != shadow:
                stages.unshadow(PIPELINE, v.version, actor="bench")
        stages.promote(PIPELINE, production, actor="bench", reason="benchmark")
        if shadow is not None:
            stages.set_shadow(PIPELINE, shadow, actor="bench", reason="benchmark")
    finally:
        stores.close()


def july_rows(n: int) -> list[dict[str, Any]]:
    import duckdb
    import numpy as np

    names = _feature_names()
    with duckdb.connect(str(WAREHOUSE), read_only=True) as con:
        df = con.execute(
            f"SELECT {', '.join(names)} FROM flights WHERE month = 7 ORDER BY flight_id LIMIT {n}"
        ).df()
    rows = []
    for record in df.to_dict("records"):
        row = {}
        for k, raw in record.items():
            value = raw.item() if isinstance(raw, np.generic) else raw
            row[k] = None if isinstance(value, float) and math.isnan(value) else value
        rows.append(row)
    return rows


def _feature_names() -> list[str]:
    from kiln.config import load_config

    return list(load_config(CONFIG).config.features)


def floor(home: Path, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Median seconds of Predictor.predict on one row and on 1,000 rows, in this process."""
    from kiln.registry import Predictor
    from kiln.settings import Settings
    from kiln.stores import open_stores

    stores = open_stores(Settings(home=home))
    with stores.metadata.unit_of_work() as uow:
        digest = uow.versions.get(PIPELINE, 1).manifest_digest
    predictor = Predictor.load(stores.content, digest, label=f"{PIPELINE} v1")
    stores.close()
    for row in rows[:200]:
        predictor.predict([row])
    one = []
    for row in rows:
        t0 = time.perf_counter()
        predictor.predict([row])
        one.append(time.perf_counter() - t0)
    batch = []
    for i in range(15):
        chunk = [rows[(i * 97 + j) % len(rows)] for j in range(BATCH)]
        t0 = time.perf_counter()
        predictor.predict(chunk)
        batch.append(time.perf_counter() - t0)
    return {"one": statistics.median(one), "batch": statistics.median(batch)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(home: Path, workers: int = 2) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILN_RELOAD_SECONDS": "0.5"}
    env.pop("KILN_PREDICT_TOKEN", None)
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiln.serving", "--home", str(home), "--port", str(port),
         "--workers", str(workers), "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Any) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server exited:\n{log.read().decode(errors='replace')}")
        try:
            # Both workers must be ready: ask a few times on fresh connections.
            if all(httpx.get(f"{url}/readyz", timeout=2).status_code == 200 for _ in range(6)):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the server did not become ready in 120 s")


# -- load generators (each in its own process) --------------------------------------------------


def run_load(
    client: str, url: str, bodies: Path, concurrency: int, seconds: float
) -> dict[str, float]:
    target = f"{url}/v1/pipelines/{PIPELINE}/predict"
    if client == "wrk":
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(WRK_SCRIPT)
        try:
            subprocess.run(  # warm-up: connections, caches, first requests of each worker
                ["wrk", "-t1", f"-c{concurrency}", "-d1s", "-s", f.name, target, "--", str(bodies)],
                capture_output=True, check=True,
            )  # fmt: skip
            out = subprocess.run(
                ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                 "-s", f.name, target, "--", str(bodies)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
        finally:
            os.unlink(f.name)
        r = json.loads(out.strip().splitlines()[-1])
        return {
            "rps": r["requests"] / (r["duration_us"] / 1e6),
            "p50": r["p50_us"] / 1e6,
            "p99": r["p99_us"] / 1e6,
            "errors": r["errors"],
        }
    out = subprocess.run(
        [sys.executable, __file__, "--_client", target, str(bodies), str(concurrency),
         str(seconds)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(json.loads(out))


def python_client(target: str, bodies_path: str, concurrency: int, seconds: float) -> None:
    """aiohttp, one connection per concurrent request; prints the result as JSON."""
    import aiohttp

    bodies = Path(bodies_path).read_bytes().splitlines()

    async def main() -> dict[str, float]:
        latencies: list[float] = []
        errors = 0
        headers = {"Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker(k: int, until: float, record: bool) -> None:
                nonlocal errors
                i = k * 7919
                while time.perf_counter() < until:
                    body = bodies[i % len(bodies)]
                    i += 1
                    t0 = time.perf_counter()
                    async with session.post(target, data=body, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                    if record:
                        latencies.append(time.perf_counter() - t0)
                        errors += not ok

            warm = time.perf_counter() + 1.0
            await asyncio.gather(*(worker(k, warm, False) for k in range(concurrency)))
            t0 = time.perf_counter()
            until = t0 + seconds
            await asyncio.gather(*(worker(k, until, True) for k in range(concurrency)))
            elapsed = time.perf_counter() - t0
        latencies.sort()
        return {
            "rps": len(latencies) / elapsed,
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "errors": errors,
        }

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main())))


# -- the benchmark -------------------------------------------------------------------------------


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def measure(
    client: str, url: str, bodies: Path, concurrency: int, seconds: float, repeat: int
) -> dict[str, float]:
    return median_of([run_load(client, url, bodies, concurrency, seconds) for _ in range(repeat)])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.3f} ms"


def main() -> None:  # noqa: PLR0915 (the benchmark's script, top to bottom)
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--home", type=Path, help="keep the trained versions here (reused)")
    ap.add_argument(
        "--only", help="comma-separated scenarios to run (default: all), e.g. 'single c=32'"
    )
    ap.add_argument("--_client", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._client:
        target, bodies, conc, secs = args._client
        python_client(target, bodies, int(conc), float(secs))
        return
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    if not WAREHOUSE.exists():
        build(WAREHOUSE)
    tmp = tempfile.TemporaryDirectory(prefix="kiln-bench-")
    home = args.home or Path(tmp.name) / "home"
    home.mkdir(parents=True, exist_ok=True)
    print(f"training the demo pipeline into {home} (reused when it has v1 and v2)", flush=True)
    train(home)
    rows = july_rows(3_000)
    singles = Path(tmp.name) / "single.jsonl"
    batches = Path(tmp.name) / "batch.jsonl"
    import orjson

    singles.write_bytes(b"\n".join(orjson.dumps({"features": r}) for r in rows) + b"\n")
    batches.write_bytes(
        b"\n".join(
            orjson.dumps({"instances": [rows[(i * 211 + j) % len(rows)] for j in range(BATCH)]})
            for i in range(10)
        )
        + b"\n"
    )
    fl = floor(home, rows)
    print(f"floor (Predictor.predict in-process, medians): one row {ms(fl['one'])},"
          f" {BATCH} rows {ms(fl['batch'])}", flush=True)  # fmt: skip
    rep, secs = args.repeat, args.seconds
    print(f"load generator: {client}; {rep} runs of {secs:g} s each, medians;"
          f" server: 2 workers; {os.cpu_count()} cores; load average before:"
          f" {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip

    scenarios = [  # (name, production, shadow, bodies, concurrency)
        ("single c=1", 1, None, singles, 1),
        ("single c=8", 1, None, singles, 8),
        ("single c=32", 1, None, singles, 32),
        ("batch c=1", 1, None, batches, 1),
        ("batch c=2", 1, None, batches, 2),
        ("capture 0% c=32", 2, None, singles, 32),
        ("shadow on c=1", 1, 2, singles, 1),
        ("shadow on c=8", 1, 2, singles, 8),
    ]
    if args.only:
        only = [name.strip() for name in args.only.split(",")]
        unknown = sorted(set(only) - {name for name, *_ in scenarios})
        if unknown:
            known = ", ".join(name for name, *_ in scenarios)
            raise SystemExit(f"--only: no scenario {', '.join(unknown)} (scenarios: {known})")
        scenarios = [s for s in scenarios if s[0] in only]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in scenarios}
    set_stages(home, production=1, shadow=None)
    with server(home) as url:
        for r in range(rep):  # interleaved, so that a slow minute of the machine hits all alike
            for name, production, shadow, bodies, conc in scenarios:
                set_stages(home, production, shadow)
                wait_serving(url, production, shadow)
                runs[name].append(run_load(client, url, bodies, conc, secs))
            print(f"  run {r + 1}/{rep} done (load average {os.getloadavg()[0]:.2f})", flush=True)
        drops = dropped(url)
    set_stages(home, production=1, shadow=None)
    results = {name: median_of(v) for name, v in runs.items()}
    print()
    for name, *_ in scenarios:
        batch = name.startswith("batch")
        _line(name, results[name], fl["batch" if batch else "one"], BATCH if batch else 1)

    errors = sum(r["errors"] for v in runs.values() for r in v)
    print("\nsummary (targets in brackets); v1 captures 100%, v2 0%; medians of", rep)
    if "single c=1" in results:
        one = results["single c=1"]
        print(f"  single-row p50 - floor:           {ms(one['p50'] - fl['one'])} [<= 1 ms]")
    if "single c=32" in results:
        print(f"  throughput at concurrency 32:     {results['single c=32']['rps']:7.0f} req/s"
              f" [>= 5000], p99 {ms(results['single c=32']['p99'])}")  # fmt: skip
    if "single c=32" in results and "capture 0% c=32" in results:
        cap = results["single c=32"]["rps"] / results["capture 0% c=32"]["rps"]
        print(f"  capture 100% / 0% throughput:     {cap:7.3f}       [>= 0.90]")
    for c in (1, 8):
        if f"shadow on c={c}" not in results or f"single c={c}" not in results:
            continue
        on, off = results[f"shadow on c={c}"], results[f"single c={c}"]
        print(f"  shadow on / off, concurrency {c}:   p99 {on['p99'] / off['p99']:5.2f}x,"
              f" p50 {on['p50'] / off['p50']:5.2f}x, throughput {on['rps'] / off['rps']:5.2f}x"
              " [p99 1.00x]")  # fmt: skip
    print(f"  failed requests: {errors:.0f}; capture drops: {drops['capture']:.0f};"
          f" shadow copies dropped: {drops['shadow']:.0f}")  # fmt: skip
    print(f"  load average after: {os.getloadavg()[0]:.2f} (other processes share these cores)")
    tmp.cleanup()


def wait_serving(url: str, production: int, shadow: int | None) -> None:
    """Until every worker serves ``production`` with ``shadow`` (asked on fresh connections)."""
    import httpx

    want = {"production": production, "shadows": [] if shadow is None else [shadow]}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = [httpx.get(f"{url}/v1/pipelines").json()[0] for _ in range(6)]
        if all({k: s[k] for k in want} == want for s in seen):
            time.sleep(0.5)
            return
        time.sleep(0.2)
    raise SystemExit(f"the server did not switch to {want} in 60 s")


def dropped(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{url}/metrics").text
    out = {"capture": 0.0, "shadow": 0.0}
    for line in text.splitlines():
        for key, metric in (("capture", "kiln_capture_dropped_total{"),
                            ("shadow", "kiln_shadow_dropped_total{")):  # fmt: skip
            if line.startswith(metric):
                out[key] += float(line.rsplit(" ", 1)[1])
    return out


def _line(label: str, r: dict[str, float], floor_s: float, rows: int = 1) -> None:
    print(
        f"  {label:16s} {r['rps']:7.0f} req/s ({r['rps'] * rows:9.0f} rows/s)"
        f"  p50 {ms(r['p50'])} ({r['p50'] / floor_s:5.1f}x floor)"
        f"  p99 {ms(r['p99'])}  errors {r['errors']:.0f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
