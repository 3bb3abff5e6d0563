"""Serving usage of a real server under real load: the CPU attributed to (pipeline, version,
segment, stage) adds up to the process's CPU as the kernel counts it (/proc/<pid>/stat), the
heavier key gets more, the Prometheus counters are exported, a failing database loses nothing,
and the serving cost items add up to the servers' charges."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_support import PIPELINE, Server, Trained, set_stage, wait_for

from kiln.config.prices import resolve_prices
from kiln.monitoring.cost.model import compute_usd
from kiln.monitoring.cost.serving import interval_charge, serving_items
from kiln.settings import Settings
from kiln.stores import open_stores
from kiln.stores.metadata.serving_usage import ServerIntervalRecord, ServingUsageRecord

pytestmark = pytest.mark.slow

URL = f"/v1/pipelines/{PIPELINE}/predict"
FLUSH = {"KILN_USAGE_FLUSH_SECONDS": "1"}
TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds, as the kernel counts them."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def written(home: Path) -> tuple[list[ServerIntervalRecord], list[ServingUsageRecord]]:
    stores = open_stores(Settings(home=home))
    try:
        since = datetime(2000, 1, 1, tzinfo=UTC)
        until = datetime.now(UTC) + timedelta(hours=1)
        with stores.metadata.read() as uow:
            return uow.serving_usage.intervals(since, until), uow.serving_usage.usage(since, until)
    finally:
        stores.close()


class Load:
    """Threads that send real requests for ``seconds``; counts what was answered, per key."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def run(self, senders: list[tuple[str, Any]], seconds: float) -> None:
        until = time.monotonic() + seconds
        threads = [
            threading.Thread(target=self._send, args=(segment, bodies, until))
            for segment, bodies in senders
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _send(self, segment: str, bodies: list[dict[str, Any]], until: float) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while time.monotonic() < until:
                body = bodies[i % len(bodies)]
                i += 1
                r = client.post(URL, json=body)
                n = len(body["instances"]) if "instances" in body else 1
                with self._lock:
                    if r.status_code != 200:
                        self.failed.append(r.text)
                        continue
                    self.requests[segment] += 1
                    self.rows[segment] += n


def exported(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a /metrics answer: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def contiguous(intervals: list[ServerIntervalRecord]) -> None:
    by_server: dict[str, list[ServerIntervalRecord]] = {}
    for interval in intervals:
        by_server.setdefault(interval.server, []).append(interval)
    for server, own in by_server.items():
        own.sort(key=lambda i: i.interval_start)
        for before, after in itertools.pairwise(own):
            assert after.interval_start == before.interval_end, f"a gap in {server}'s intervals"


def test_usage_under_load_adds_up_to_the_process_cpu_and_survives_a_db_outage(
    trained: Trained, tmp_path: Path, flight_rows: list[dict[str, Any]], serve: Any
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 1, "production")
    launched = datetime.now(UTC)
    server: Server = serve(home, extra_env=FLUSH)
    server.wait_ready()
    ready = datetime.now(UTC)
    pid = server.proc.pid
    jfk = [r for r in flight_rows if r["origin"] == "JFK"]
    lga = [r for r in flight_rows if r["origin"] == "LGA"]
    assert len(jfk) >= 50 and len(lga) >= 50
    batches = [{"instances": jfk[i : i + 50]} for i in range(0, len(jfk) - 49, 10)]
    singles = [{"features": r} for r in lga]
    load = Load(server.url)
    # the start-up interval (imports, loading the version: seconds of CPU on a busy machine)
    # closes before the load, so the intervals that overlap the load hold only its CPU
    wait_for(
        lambda: any(i.interval_end >= ready for i in written(home)[0]),
        10,
        "the start-up interval to be written",
    )

    cpu_before = process_cpu(pid)
    started = datetime.now(UTC)
    load.run([("JFK", batches), ("JFK", batches), ("LGA", singles), ("LGA", singles)], 5.0)
    ended = datetime.now(UTC)
    cpu_used = process_cpu(pid) - cpu_before
    assert not load.failed, load.failed[:3]
    time.sleep(2.5)  # the interval that holds the end of the load is written

    intervals, rows = written(home)
    during = [r for r in rows if r.interval_end > started and r.interval_start < ended]
    assert {(r.pipeline, r.version, r.stage) for r in during} == {(PIPELINE, 1, "production")}
    by_segment: dict[str, list[ServingUsageRecord]] = {}
    for r in during:
        by_segment.setdefault(r.segment, []).append(r)
    assert set(by_segment) == {"JFK", "LGA"}
    for segment in ("JFK", "LGA"):
        assert sum(r.requests for r in by_segment[segment]) == load.requests[segment]
        assert sum(r.rows for r in by_segment[segment]) == load.rows[segment]
    attributed = sum(r.cpu_seconds + r.shared_cpu_seconds for r in during)
    measured = {s: sum(r.cpu_seconds for r in by_segment[s]) for s in by_segment}
    print(f"attributed {attributed:.3f} s, process {cpu_used:.3f} s, measured {measured}")
    assert attributed == pytest.approx(cpu_used, rel=0.15), (attributed, cpu_used)
    per_request = {s: measured[s] / load.requests[s] for s in measured}
    assert per_request["JFK"] > 2 * per_request["LGA"], per_request
    assert sum(measured.values()) > 0.2 * cpu_used  # the requests' own threads, measured
    assert intervals[0].interval_start <= launched + timedelta(seconds=1)
    assert intervals[0].interval_start >= launched - timedelta(seconds=2)
    assert all(i.pipelines == [PIPELINE] for i in intervals if i.interval_start >= ready)
    assert all(i.rss_bytes > 50 * 2**20 and i.reserved_cpus == 1.0 for i in intervals)

    samples = exported(httpx.get(f"{server.url}/metrics").text)
    for kind in ("request", "shared"):
        labels = (("kind", kind), ("pipeline", PIPELINE), ("segment", "JFK"))
        labels += (("stage", "production"), ("version", "1"))
        assert samples.get(("kiln_serving_cpu_seconds_total", labels), 0.0) > 0, kind
    process = samples[("kiln_serving_process_cpu_seconds_total", ())]
    assert process >= sum(i.cpu_seconds for i in intervals) * 0.99

    # the database refuses every usage write for a while: the intervals wait, none is lost
    db = sqlite3.connect(home / "kiln.db")
    db.execute(
        "CREATE TRIGGER outage BEFORE INSERT ON server_intervals"
        " BEGIN SELECT RAISE(ABORT, 'usage outage (test)'); END"
    )
    db.commit()
    outage = datetime.now(UTC)
    load.run([("LGA", singles), ("JFK", batches)], 2.5)
    time.sleep(1.5)
    assert "cannot write to the metadata store" in server.log()
    assert not [i for i in written(home)[0] if i.interval_start > outage]
    db.execute("DROP TRIGGER outage")
    db.commit()
    db.close()
    wait_for(lambda: "takes writes again" in server.log(), 10, "the usage writes to resume")
    cpu_end = process_cpu(pid)
    # SIGTERM: the last interval is written on the way out (uvicorn may re-raise SIGTERM)
    assert server.stop() in (0, -signal.SIGTERM), server.log()

    intervals, rows = written(home)
    contiguous(intervals)
    assert len({i.server for i in intervals}) == 1
    for segment in ("JFK", "LGA"):
        assert sum(r.requests for r in rows if r.segment == segment) == load.requests[segment]
        assert sum(r.rows for r in rows if r.segment == segment) == load.rows[segment]
    total = sum(i.cpu_seconds for i in intervals)
    assert cpu_end <= total <= cpu_end + 1.0  # from the process start to its exit
    assert sum(i.requests for i in intervals) == sum(load.requests.values())

    # the serving cost of these intervals adds up to what the servers are charged
    stores = open_stores(Settings(home=home))
    try:
        prices = resolve_prices(Settings(home=home))
        since = datetime(2000, 1, 1, tzinfo=UTC)
        items = serving_items(stores.metadata, prices, since=since, until=datetime.now(UTC))
    finally:
        stores.close()
    charged = 0.0
    for interval in intervals:
        own = [r for r in rows if r.interval_start == interval.interval_start]
        cpu, memory = interval_charge(interval, own)
        charged += sum(compute_usd(prices, cpu, memory, training=False))
    assert sum(i.usd or 0.0 for i in items) == pytest.approx(charged, rel=1e-9)
    assert sum(i.predictions for i in items) == sum(load.rows.values())
    requested = [i for i in items if i.detail == "requests"]
    jfk_usd = sum(i.usd or 0.0 for i in requested if i.segment == "JFK")
    assert jfk_usd > 0 and {i.pipeline for i in items} == {PIPELINE}


def test_each_worker_is_its_own_server_and_shadows_are_counted(
    trained: Trained, tmp_path: Path, flight_rows: list[dict[str, Any]], serve: Any
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 1, "production")
    set_stage(home, 2, "shadow")
    server: Server = serve(home, workers=2, extra_env=FLUSH)
    server.wait_ready()
    load = Load(server.url)
    singles = [{"features": r} for r in flight_rows]
    load.run([("any", singles), ("any", singles), ("any", singles)], 2.0)
    assert not load.failed
    samples = exported(httpx.get(f"{server.url}/metrics").text)
    assert server.stop() in (0, -signal.SIGTERM), server.log()
    intervals, rows = written(home)
    servers = {i.server for i in intervals}
    assert len(servers) == 2, servers
    assert len({s.split(":")[1] for s in servers}) == 2  # two pids
    contiguous(intervals)
    production = [r for r in rows if r.stage == "production"]
    shadow = [r for r in rows if r.stage == "shadow"]
    assert sum(r.rows for r in production) == load.rows["any"]
    assert {r.version for r in production} == {1} and {r.version for r in shadow} == {2}
    assert sum(r.rows for r in shadow) == load.rows["any"]  # every copy predicted by the exit
    assert sum(r.cpu_seconds for r in shadow) > 0
    # the copies are no traffic: no share of the shared CPU, no requests, no predictions
    assert all(r.shared_cpu_seconds == 0.0 for r in shadow)
    assert sum(r.shared_cpu_seconds for r in production) > 0
    assert sum(i.requests for i in intervals) == load.requests["any"]
    stores = open_stores(Settings(home=home))
    try:
        prices = resolve_prices(Settings(home=home))
        since = datetime(2000, 1, 1, tzinfo=UTC)
        until = datetime.now(UTC) + timedelta(seconds=1)
        items = serving_items(stores.metadata, prices, since=since, until=until)
        mine = serving_items(stores.metadata, prices, since=since, until=until, pipeline=PIPELINE)
    finally:
        stores.close()
    assert mine == items
    assert sum(i.predictions for i in items) == load.rows["any"]
    shadow_items = [i for i in items if i.version == 2]
    assert shadow_items and all(i.detail == "requests" for i in shadow_items)  # no idle share
    assert sum(i.usd or 0.0 for i in shadow_items) > 0  # its own CPU is the pipeline's cost
    assert samples[("kiln_serving_process_cpu_seconds_total", ())] > 0


def test_close_gives_up_a_write_stuck_on_the_database(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A usage write blocked by the database (a table lock it never gets) holds the interval
    thread's lock: close() returns within its timeout and says what it gave up."""
    import sqlalchemy as sa

    from kiln.serving._metrics import Metrics
    from kiln.serving._usage import UsageMeter, UsageRecorder
    from kiln.stores.metadata import MetadataStore

    metadata = MetadataStore(pg_url, create=True)
    metadata.upgrade()
    blocker = sa.create_engine(pg_url)
    conn = blocker.connect()
    tx = conn.begin()
    conn.execute(sa.text("LOCK TABLE server_intervals IN ACCESS EXCLUSIVE MODE"))
    meter = UsageMeter()
    recorder = UsageRecorder(meter, Metrics(), lambda: [PIPELINE], reserved_cpus=1.0, every=0.1)
    recorder.start(metadata)
    try:
        meter.add(PIPELINE, 1, "production", ["JFK"], 0.01)
        wait_for(lambda: recorder.pending, 5, "an interval to be taken")
        time.sleep(0.5)  # its write waits for the table lock
        closing = threading.Thread(target=recorder.close, args=(1.0,))
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="kiln.serving"):
            closing.start()
            closing.join(10)
        took = time.monotonic() - started
        assert not closing.is_alive(), "close() waited for the stuck write"
        assert took < 3.0, took
        assert "is still stuck after 1.0s" in caplog.text and "given up" in caplog.text
    finally:
        tx.rollback()
        conn.close()
        blocker.dispose()
        recorder.close(5.0)
        metadata.dispose()
