"""Monitoring on the real 2013 New York flights, with the real `kiln` commands.

    python examples/flights/monitor_demo.py [--home .kiln-monitor-demo] [--port 8765]
                                            [--every 3] [--report monitor-report.html]

1. The warehouse holds January-June. `kiln run kiln.monitor.yaml` trains v1 (with its training
   reference: histograms per feature and segment, the holdout's MAE) and promotes it.
2. `kiln serve` serves it. The rest of 2013 is sent month by month as traffic: every
   ``--every``-th flight, one request per scheduled hour (a batch shares one event time), with
   ``X-Kiln-Event-Time`` set to that hour, so the captures fall into the windows of the flights'
   own dates, and ``X-Request-ID`` set to the hour's first flight_id (row i of the batch is
   ``<id>:<i>``).
3. After each month its real ``arr_delay`` values arrive as labels (`kiln labels add`) and
   `kiln monitor` computes the month's weekly windows: drift of every feature per origin against
   v1's training reference, the live MAE against the holdout MAE, latency and errors. The
   figures printed are read from `kiln monitor --json`, not prepared.
4. The summer's weather is not the spring's: the drift of ``temp`` passes the alert threshold
   two windows in a row and an alert opens, once; a local webhook receiver gets it.
5. The warehouse now holds more months: `kiln scheduler --once` starts the retraining the alert
   asks for (`monitor.retrain.on: [drift]`, i.e. `kiln run --trigger drift --alert ID`), which
   trains v2; its gates pass and it is promoted. The remaining months are served by v2.
6. `kiln monitor report` writes the whole story as one HTML page that opens offline.
7. `kiln cost` prints what it all cost: training, serving and storage, from what was measured.

The stores live in --home (wiped at the start), so `kiln --home .kiln-monitor-demo status`
works afterwards.
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import httpx
import yaml
from demo_shell import HERE, ROOT, KilnShell, build  # beside this script

PIPELINE = "flights-delay"
CONFIG = "kiln.monitor.yaml"
HOOK_PORT = 8766  # the webhook channel of kiln.monitor.yaml
FEATURES = ["origin", "dest", "carrier", "hour", "day_of_week", "distance",
            "sched_dep_time", "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip",
            "pressure", "visib"]  # fmt: skip
MONTHS = ["2013-07-01", "2013-08-01", "2013-09-01", "2013-10-01", "2013-11-01", "2013-12-01",
          "2014-01-01"]  # fmt: skip
NEW_YORK = ZoneInfo("America/New_York")
ALL = "__all__"


class Receiver(http.server.ThreadingHTTPServer):
    """The webhook channel's other end: keeps every JSON body it is sent."""

    def __init__(self, port: int) -> None:
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    outer.received.append(json.loads(body or b"{}"))
                except ValueError:
                    outer.received.append({"text": body.decode(errors="replace")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Demo(KilnShell):
    def __init__(self, home: Path, port: int) -> None:
        super().__init__(home, port, PIPELINE, {})
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def kiln(self, *args: str, check: bool = True, capture: bool = False) -> str:
        return self.run(*args, check=check, capture=capture)[1]

    def traffic(self, hours: list[tuple[datetime, list[dict[str, Any]]]]) -> dict[str, str]:
        """One request per hour of flights, with the hour as its event time; the request id of
        each flight (``<first flight_id>:<row>``) for its label."""
        ids: dict[str, str] = {}
        codes: dict[int, int] = defaultdict(int)
        for hour, rows in hours:
            rid = f"f{rows[0]['flight_id']}"
            event = hour.replace(tzinfo=NEW_YORK).isoformat()  # local schedule -> with offset
            body = {"instances": [{k: r[k] for k in FEATURES} for r in rows]}
            answer = self.http.post(
                f"/v1/pipelines/{PIPELINE}/predict", json=body,
                headers={"X-Request-ID": rid, "X-Kiln-Event-Time": event},
            )  # fmt: skip
            codes[answer.status_code] += 1
            for i, r in enumerate(rows):
                ids[str(r["flight_id"])] = f"{rid}:{i}"
        print(f"  {sum(codes.values()):,} requests ({sum(len(r) for _, r in hours):,} flights):"
              f" status codes {dict(codes)}")  # fmt: skip
        return ids


def flights(warehouse: Path, start: str, end: str, every: int) -> list[dict[str, Any]]:
    """Every ``every``-th flight scheduled in [start, end), with its id, hour and outcome."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        frame = con.execute(
            f"SELECT flight_id, time_hour, arr_delay, {', '.join(FEATURES)} FROM flights"
            " WHERE time_hour >= CAST($1 AS DATE) AND time_hour < CAST($2 AS DATE)"
            " AND flight_id % $3 = 0 ORDER BY time_hour, flight_id",
            [start, end, every],
        ).df()
    finally:
        con.close()
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_unit="s"))
    return records


def by_hour(rows: list[dict[str, Any]]) -> list[tuple[datetime, list[dict[str, Any]]]]:
    hours: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        hours[int(r["time_hour"])].append(r)
    # epoch seconds of the warehouse's naive local hour: back to that naive hour
    return [(datetime.fromtimestamp(h, UTC).replace(tzinfo=None), rs)
            for h, rs in sorted(hours.items())]  # fmt: skip


def show_windows(docs: list[dict[str, Any]], shown: set[str]) -> None:
    """The figures of each window the pass computed, from `kiln monitor --json` (a window
    computed before is recomputed when labels of its requests arrive later)."""
    for d in docs:
        if d.get("stored_before"):
            continue
        versions = ",".join(f"v{v}" for v in d.get("versions", [])) or "-"
        temp = next((x for x in d.get("drift", []) if x["segment"] == ALL
                     and x["feature"] == "temp" and x["value"] is not None), None)  # fmt: skip
        mae = next((p for p in d.get("performance", []) if p["segment"] == ALL), None)
        judged = [f for f in d.get("findings", []) if f["level"] in ("warn", "alert")]
        worst = max(judged, key=lambda f: (f["level"] == "alert", f["value"] or 0), default=None)
        line = f"  window {d['start'][:10]}  {d['rows']:>5} requests  {versions:<6}"
        line += f"  temp psi {temp['value']:.3f} ({temp['level']})" if temp else "  temp psi -"
        if mae and mae["value"] is not None:
            line += f"  live MAE {mae['value']:.1f} vs {mae['reference']:.1f} in training"
        if worst:
            line += f"  worst: {worst['check']} {worst['level']}"
        print(line + ("  (recomputed: labels arrived)" if d["start"] in shown else ""))
        shown.add(d["start"])


def story(demo: Demo, traffic: dict[str, list[dict[str, Any]]], report: Path) -> None:
    warehouse = HERE / "warehouse.duckdb"
    demo.say("1. January-June in the warehouse: train v1 with its training reference")
    build(warehouse, "2013-07-01", quiet=True)
    demo.kiln("run", CONFIG)
    receiver = Receiver(HOOK_PORT)

    demo.say("2. Serve v1; the rest of 2013 arrives month by month")
    demo.serve()
    demo.wait_for_version(1)
    retrained, shown = False, set[str]()
    labels_dir = Path(tempfile.mkdtemp(prefix="kiln-labels-"))
    for month, until in itertools.pairwise(MONTHS):
        rows = traffic[month]
        demo.say(f"3-4. {month[:7]}: {len(rows):,} flights as traffic, their arr_delay as labels")
        sent = time.perf_counter()
        ids = demo.traffic(by_hour(rows))
        print(f"  ({time.perf_counter() - sent:.1f} s)")
        time.sleep(2.5)  # the server writes its captures every second
        labels = labels_dir / f"labels-{month[:7]}.csv"
        with labels.open("w") as f:
            f.write("request_id,arr_delay\n")
            f.writelines(f"{ids[str(r['flight_id'])]},{r['arr_delay']}\n"
                         for r in rows if r["arr_delay"] is not None)  # fmt: skip
        demo.kiln("labels", "add", PIPELINE, str(labels), "--config", CONFIG)
        out = demo.kiln("monitor", PIPELINE, "--config", CONFIG, "--until", until, "--json",
                        capture=True)  # fmt: skip
        show_windows(json.loads(out or "[]"), shown)
        if retrained:
            continue
        episodes = json.loads(demo.kiln("alerts", "list", "--limit", "500", "--json",
                                        capture=True) or "[]")  # fmt: skip
        live = [a for a in episodes if a.get("status") == "open"]
        print(f"  {len(live)} open alert episode(s), {len(episodes) - len(live)} pending")
        for a in live[:3]:
            print(f"    {a.get('check')}: {a.get('level')} {a.get('message')}")
        opened = [a for a in live if a.get("kind") == "drift" and a.get("level") == "alert"]
        opened.sort(key=lambda a: a.get("check") != "drift:temp:__all__")  # the headline one
        if opened and not retrained:
            retrained = True
            demo.say(f"5. An alert is open; the warehouse now holds January-{month[:7]}: retrain")
            build(warehouse, until, quiet=True)
            retrain(demo, opened[0])
            demo.wait_for_version(2)

    demo.say("The scheduler's next pass: notifications delivered, no second retraining")
    demo.kiln("scheduler", "--dir", str(demo.home / "scheduled"), "--once")

    demo.say("6. The report: one HTML file that opens offline")
    demo.kiln("monitor", "report", PIPELINE, "--html", str(report))
    demo.kiln("alerts", "list", "--limit", "8")
    demo.kiln("status")
    demo.cost()
    print(f"  the webhook received {len(receiver.received)} notification(s) in all")
    shutil.rmtree(labels_dir, ignore_errors=True)
    receiver.shutdown()


def retrain(demo: Demo, alert: dict[str, Any]) -> None:
    """The scheduler starts the retraining the open alert asks for (``monitor.retrain``:
    `kiln run --trigger drift --alert ID`, within its cooldown and max_per_day).

    Its folder holds this pipeline's kiln.yaml with ``monitor.enabled: false``: the demo replays
    2013, so it runs `kiln monitor --until` itself; the scheduler's own monitor pass would judge
    every window from the last one to today (empty ones) before their traffic is sent."""
    print(f"  alert {alert.get('id')}: {alert.get('check')} {alert.get('value'):.3g} over"
          f" {alert.get('threshold')} for {alert.get('streak')} windows")  # fmt: skip
    folder = demo.home / "scheduled"
    folder.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load((HERE / CONFIG).read_text())
    retrain = doc["monitor"]["retrain"]
    retrain["on"] = retrain.pop(True, retrain.get("on"))  # plain YAML reads the key `on` as true
    doc["data"]["source"] = str(HERE / doc["data"]["source"])
    doc["schedule"] = {"cron": "0 4 1 1 *", "timezone": "America/New_York"}  # not due today
    doc["monitor"]["enabled"] = False
    (folder / "kiln.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    demo.kiln("scheduler", "--dir", str(folder), "--once")
    if demo.serving_version() == 1:
        print("  the scheduler started no retraining: `kiln run --trigger drift` by hand")
        demo.kiln("run", CONFIG, "--trigger", "drift", "--alert", str(alert.get("id")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--home", type=Path, default=ROOT / ".kiln-monitor-demo")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--every", type=int, default=3, help="send every n-th flight")
    parser.add_argument("--report", type=Path, default=ROOT / "monitor-report.html")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    shutil.rmtree(home, ignore_errors=True)
    demo = Demo(home, args.port)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "all-of-2013.duckdb"
        build(
            full, None, quiet=True
        )  # the callers' side: where the traffic and the labels come from
        traffic = {m: flights(full, m, n, args.every) for m, n in itertools.pairwise(MONTHS)}
    warehouse = HERE / "warehouse.duckdb"
    try:
        story(demo, traffic, args.report.resolve())
    finally:
        demo.stop()
        build(warehouse, None, quiet=True)  # leave the whole year in place, as `make demo` found it
    print(
        f"\nthe monitoring demo ran in {time.perf_counter() - started:.0f} s; open"
        f" {args.report} in a browser, or explore with `kiln --home {home} status`"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
