"""The whole release loop on the real 2013 New York flights, with the real `kiln` commands.

    python examples/flights/loop_demo.py [--home .kiln-demo] [--port 8765]

1. The warehouse holds January-June. `kiln run` trains v1; its gates pass and, as the first
   version with `deploy.auto_promote`, it is promoted.
2. `kiln serve` serves it; July's flights are sent to it as traffic and captured.
3. July lands in the warehouse. `kiln run` trains v2 on January-July; the replay gate replays
   the captured July requests against it, champion/challenger compares it with v1 on the same
   holdout; it passes and is promoted. The server picks it up without a restart.
4. A candidate that needs `dep_delay` (which callers never send) trains v3: the replay and
   feature-availability gates block it, with the failing requests as evidence.
5. Ana, who owns the flights pipelines, overrides the block with her own token and a reason
   (audited under her name). The callers' requests now fail on v3, and `kiln watch` rolls it
   back to v2 automatically: its error rate passed the threshold.
6. `kiln cost` prints what it all cost: training, serving and storage, from what was measured.

`make ui` then opens the whole story in the browser (`kiln --home .kiln-demo ui`): sign in as
ana (owner) or vic (viewer), with the passwords the demo prints at its end.

Every command is printed before it runs. The stores live in --home (wiped at the start), so
`kiln --home .kiln-demo status` and friends work afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import duckdb
from demo_shell import HERE, ROOT, KilnShell, build  # beside this script

PIPELINE = "flights-delay"
FEATURES = ["origin", "dest", "carrier", "hour", "day_of_week", "distance",
            "sched_dep_time", "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip",
            "pressure", "visib"]  # fmt: skip
ADMIN_TOKEN = "demo-admin-token"
PEOPLE = {"ana": ("owner", "kiln-demo-ana"), "vic": ("viewer", "kiln-demo-vic")}
"""The demo's people: ana owns the flights pipelines, vic reads; (role, password)."""
EXIT_BLOCKED = 10  # `kiln run`: the version was registered but its gates blocked it


class Demo(KilnShell):
    def __init__(self, home: Path, port: int) -> None:
        super().__init__(home, port, PIPELINE, {"KILN_ADMIN_TOKEN": ADMIN_TOKEN})

    def kiln(self, *args: str, check: bool = True) -> int:
        return self.run(*args, check=check)[0]

    def people(self) -> str:
        """Add ana (owner of flights-*) and vic (viewer) with the admin token; ana's token."""
        self.masked[ADMIN_TOKEN] = "$KILN_ADMIN_TOKEN"
        for name, (role, password) in PEOPLE.items():
            scope = ["--pipelines", "flights-*"] if role == "owner" else []
            self.run("users", "add", name, "--role", role, *scope, "--password-stdin",
                     "--token", ADMIN_TOKEN, stdin=password)  # fmt: skip
        _, token = self.run(
            "tokens", "create", "ana", "--label", "demo", "--token", ADMIN_TOKEN, capture=True
        )
        secret = token.strip()
        self.masked[secret] = "$ANA_TOKEN"
        print("  (printed once; kept as $ANA_TOKEN)")
        return secret

    def post(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            self.url(f"/v1/pipelines/{PIPELINE}/predict"),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def traffic(self, rows: list[dict[str, Any]], batch: int) -> dict[int, int]:
        """Send ``rows`` as prediction requests of ``batch`` instances; count status codes."""
        codes: dict[int, int] = {}
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            body = {"instances": chunk} if batch > 1 else {"features": chunk[0]}
            status, _ = self.post(body)
            codes[status] = codes.get(status, 0) + 1
        return codes


def flights(warehouse: Path, start: str, end: str) -> list[dict[str, Any]]:
    """Flights scheduled in [start, end) as the callers send them: the base features only."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        frame = con.execute(
            f"SELECT {', '.join(FEATURES)} FROM flights"
            " WHERE time_hour >= CAST($1 AS DATE) AND time_hour < CAST($2 AS DATE)"
            " ORDER BY time_hour, flight_id",
            [start, end],
        ).df()
    finally:
        con.close()
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return records


def story(
    demo: Demo, warehouse: Path, july: list[dict[str, Any]], august: list[dict[str, Any]]
) -> None:
    demo.say("1. January-June in the warehouse: train v1, gate it, promote it")
    build(warehouse, "2013-07-01")
    demo.kiln("run", "kiln.yaml")

    demo.say(f"2. Serve v1 and send July's {len(july):,} flights as traffic (captured)")
    demo.serve()
    demo.wait_for_version(1)
    codes = demo.traffic(july, batch=100)
    print(f"  {sum(codes.values())} requests of 100 flights: status codes {codes}")
    time.sleep(2.5)  # the server writes its captures every second
    demo.kiln(
        "capture", "query",
        "SELECT version, stage, count(*) AS requests, round(avg(prediction), 2) AS mean_minutes"
        " FROM captures GROUP BY ALL",
    )  # fmt: skip

    demo.say("3. July lands: retrain on January-July; replay July's traffic against v2")
    build(warehouse, "2013-08-01")
    demo.kiln("run", "kiln.yaml")
    demo.wait_for_version(2)

    demo.say("4. A candidate that needs dep_delay, which callers never send: blocked")
    code = demo.kiln("run", "candidate-with-dep_delay.yaml", check=False)
    if code != EXIT_BLOCKED:  # registered, then blocked by its gates: its own exit code
        raise SystemExit(f"expected exit code {EXIT_BLOCKED} (blocked), got {code}")
    demo.kiln("gates", "show", PIPELINE, "3")

    demo.say("5. Ana, who owns the pipeline, overrides the block with her token and a reason")
    ana = demo.people()
    reason = "dep_delay improves MAE a lot; the booking app will send it from tomorrow"
    demo.kiln("override", PIPELINE, "3", "--token", ana, "--reason", reason)
    demo.wait_for_version(3)
    codes = demo.traffic(august[:60], batch=1)
    print(f"  60 requests as the callers send them (no dep_delay): status codes {codes}")
    time.sleep(2.5)  # the server writes its captures every second

    demo.say("6. kiln watch sees v3's error rate and rolls it back to v2")
    demo.kiln("watch", "--once")
    demo.wait_for_version(2)
    codes = demo.traffic(august[60:120], batch=1)
    print(f"  60 more requests: status codes {codes}")

    demo.say("Where it stands")
    demo.kiln("status")
    demo.kiln("audit", "--pipeline", PIPELINE, "--limit", "12")
    demo.cost()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--home", type=Path, default=ROOT / ".kiln-demo")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    home = args.home.resolve()
    shutil.rmtree(home, ignore_errors=True)
    demo = Demo(home, args.port)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "all-of-2013.duckdb"
        build(full, None)  # the callers' side: where July's requests come from
        july = flights(full, "2013-07-01", "2013-08-01")
        august = flights(full, "2013-08-01", "2013-08-02")
    warehouse = HERE / "warehouse.duckdb"
    try:
        story(demo, warehouse, july, august)
    finally:
        demo.stop()
        build(warehouse, None)  # leave the whole year in place, as `make demo` found it
    print(
        f"\nthe release loop ran in {time.perf_counter() - started:.0f} s;"
        f" explore it with `kiln --home {home} status`, or in the browser:"
        f" `make ui` (`kiln --home {home} ui`), http://127.0.0.1:8080/, signed in as "
        + " or ".join(f"{n} / {pw} ({role})" for n, (role, pw) in PEOPLE.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
