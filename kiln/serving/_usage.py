"""Serving usage: the CPU each request costs, per (pipeline, version, segment, stage), and what
the whole server process used, recorded per interval for serving cost.

Hot path (``UsageMeter.add``): the request's own thread CPU clock (``time.thread_time``, read at
the start and the end of ``Predictions.handle``, on the event loop or in the worker thread that
answered it) is added to cumulative totals that only that thread writes: no lock, no queue. A
batch's CPU is split over its segments by rows. The shadow thread counts each shadow version's
predictions the same way, as stage ``shadow`` (its CPU split over the copied requests by rows):
its own CPU is the pipeline's cost, but its copies are no requests of their own (they take no
share of the shared CPU and the interval's ``requests`` count answered ones only).

Per interval (``UsageRecorder``, one background thread per server process, every
``usage_flush_seconds`` and at a clean shutdown): the process CPU (``os.times``: every thread)
since the last interval, its resident set, the reserved vCPUs (``serving_cpus``), and each key's
requests, rows and CPU since the last interval. ``shared`` = process CPU - measured request CPU
(the event loop's HTTP work, the capture writer, registry reloads, GC; never below 0)
is split over the interval's answered keys (production, canary) by requests. The first
interval starts at the process start: start-up is serving cost too. Intervals are written in
order; a failed write keeps them in memory and retries them (same keys: idempotent) at the
next interval, so nothing is lost while the database is down, and requests never wait for
the database.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from kiln.serving._metrics import Metrics
from kiln.stores.metadata import MetadataStore
from kiln.stores.metadata.serving_usage import (
    ANSWERED_STAGES,
    ServerIntervalRecord,
    ServingUsageRecord,
)

__all__ = ["Interval", "UsageMeter", "UsageRecorder", "process_start", "server_id"]

logger = logging.getLogger("kiln.serving")

Key = tuple[str, int, str, str]
"""(pipeline, version, segment, stage)"""
MAX_PENDING = 10_000
"""Unwritten intervals kept apart; past this, a new one is merged into the newest kept."""


class UsageMeter:
    """Cumulative requests, rows and CPU seconds per key, written by the requests' threads."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._threads: list[dict[Key, list[float]]] = []
        self._register = threading.Lock()

    def add(self, pipeline: str, version: int, stage: str, models: list[str], cpu: float) -> None:
        """One answered request: ``models`` holds each row's model (its segment). Called by
        the thread that answered it (and by the shadow thread, for the shadow versions)."""
        try:
            totals: dict[Key, list[float]] = self._local.totals
        except AttributeError:
            totals = self._new_thread()
        n = len(models)
        if n == 1:
            _add(totals, (pipeline, version, models[0], stage), 1, cpu)
        elif n:
            for segment, rows in Counter(models).items():
                _add(totals, (pipeline, version, segment, stage), rows, cpu * rows / n)

    def _new_thread(self) -> dict[Key, list[float]]:
        totals: dict[Key, list[float]] = {}
        with self._register:  # once per thread
            self._threads.append(totals)
        self._local.totals = totals
        return totals

    def totals(self) -> dict[Key, tuple[float, float, float]]:
        """(requests, rows, cpu seconds) per key since the start, summed over the threads."""
        with self._register:
            threads = list(self._threads)
        out: dict[Key, tuple[float, float, float]] = {}
        for per_thread in threads:
            for key, acc in per_thread.copy().items():  # copy(): atomic under the GIL
                requests, rows, cpu = acc  # one unpack: a consistent enough triple
                r0, n0, c0 = out.get(key, (0.0, 0.0, 0.0))
                out[key] = (r0 + requests, n0 + rows, c0 + cpu)
        return out


def _add(totals: dict[Key, list[float]], key: Key, rows: int, cpu: float) -> None:
    acc = totals.get(key)
    if acc is None:
        acc = totals[key] = [0, 0, 0.0]
    acc[0] += 1
    acc[1] += rows
    acc[2] += cpu


@dataclass
class Interval:
    """One interval of one server process, as it will be written."""

    start: datetime
    end: datetime
    cpu_seconds: float
    rss_bytes: int
    requests: int
    pipelines: list[str]
    keys: dict[Key, list[float]] = field(default_factory=dict)
    """(requests, rows, request cpu, shared cpu) per key."""

    def merge(self, later: Interval) -> None:
        """Take ``later`` into this interval (kept apart no more: too many unwritten)."""
        self.end = later.end
        self.cpu_seconds += later.cpu_seconds
        self.rss_bytes = max(self.rss_bytes, later.rss_bytes)
        self.requests += later.requests
        self.pipelines = sorted(set(self.pipelines) | set(later.pipelines))
        for key, values in later.keys.items():
            mine = self.keys.setdefault(key, [0.0, 0.0, 0.0, 0.0])
            for i, value in enumerate(values):
                mine[i] += value

    def records(
        self, server: str, reserved: float
    ) -> tuple[ServerIntervalRecord, list[ServingUsageRecord]]:
        interval = ServerIntervalRecord(
            server=server,
            interval_start=self.start,
            interval_end=self.end,
            cpu_seconds=self.cpu_seconds,
            rss_bytes=self.rss_bytes,
            reserved_cpus=reserved,
            requests=self.requests,
            pipelines=self.pipelines,
        )
        rows = [
            ServingUsageRecord(
                server=server,
                interval_start=self.start,
                interval_end=self.end,
                pipeline=pipeline,
                version=version,
                segment=segment,
                stage=stage,
                requests=round(requests),
                rows=round(n),
                cpu_seconds=cpu,
                shared_cpu_seconds=shared,
            )
            for (pipeline, version, segment, stage), (requests, n, cpu, shared) in sorted(
                self.keys.items()
            )
        ]
        return interval, rows


class UsageRecorder:
    """The interval thread of one server process (see the module's docstring)."""

    def __init__(
        self,
        meter: UsageMeter,
        metrics: Metrics,
        pipelines: Callable[[], Sequence[str]],
        *,
        reserved_cpus: float,
        every: float,
    ) -> None:
        self._meter = meter
        self._metrics = metrics
        self._pipelines = pipelines
        self.reserved_cpus = reserved_cpus
        self._every = every
        self.started = process_start()
        self.server = server_id(self.started)
        self._last_end = self.started
        self._last_cpu = 0.0  # os.times() counts from the process start
        self._last: dict[Key, tuple[float, float, float]] = {}
        self.pending: deque[Interval] = deque()
        self.failing: str | None = None
        self._metadata: MetadataStore | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the interval thread against close()

    def start(self, metadata: MetadataStore) -> None:
        self._metadata = metadata
        self._thread = threading.Thread(target=self._run, name="kiln-usage", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """The last interval (up to now) is taken and written (once tried), within ``timeout``
        in all: a write stuck on a database that does not answer holds the interval thread's
        lock, and the shutdown gives the last interval up rather than wait for it."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            logger.warning(
                "serving usage: a write to the metadata store is still stuck after %ss; the"
                " last interval of %s and %d unwritten one(s) are given up",
                timeout, self.server, len(self.pending),
            )  # fmt: skip
            return
        try:
            self.take(last=True)
            self._write()
        except Exception:  # the rest of the shutdown (captures) goes on
            logger.exception("serving usage: recording the last interval failed")
        finally:
            self._lock.release()
        if self.pending:
            logger.warning(
                "serving usage: %d interval(s) of %s could not be written before exit (%s)",
                len(self.pending), self.server, self.failing,
            )  # fmt: skip

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.flush()
            except Exception:  # the thread must outlive any bug in one interval
                logger.exception("serving usage: recording an interval failed")

    def flush(self, *, last: bool = False) -> None:
        """Close the current interval and write every unwritten one."""
        with self._lock:
            self.take(last=last)
            self._write()

    def take(self, *, last: bool = False) -> Interval | None:
        """Close the interval that ends now, count it in the metrics, keep it to be written.

        While the process has loaded no pipeline and had no request (it is starting), the
        interval goes on (None), so that start-up is charged to the pipelines it loads."""
        pipelines = sorted(set(self._pipelines()))
        end = datetime.now(UTC)
        times = os.times()
        cpu = times.user + times.system
        totals = self._meter.totals()
        process = max(0.0, cpu - self._last_cpu)
        keys: dict[Key, list[float]] = {}
        for key, (requests, rows, used) in totals.items():
            r0, n0, c0 = self._last.get(key, (0.0, 0.0, 0.0))
            if requests > r0:
                keys[key] = [requests - r0, rows - n0, max(0.0, used - c0), 0.0]
        if not keys and not pipelines and not last:
            return None
        measured = sum(v[2] for v in keys.values())
        answered = {k: v for k, v in keys.items() if k[3] in ANSWERED_STAGES}
        count = sum(v[0] for v in answered.values())
        shared = max(0.0, process - measured)
        if count:
            for values in answered.values():
                values[3] = shared * values[0] / count
        self._last, self._last_cpu = totals, cpu
        interval = Interval(
            start=self._last_end,
            end=max(end, self._last_end),
            cpu_seconds=process,
            rss_bytes=rss_bytes(),
            requests=round(count),
            pipelines=pipelines,
            keys=keys,
        )
        self._last_end = interval.end
        self._count(interval)
        if len(self.pending) >= MAX_PENDING:
            self.pending[-1].merge(interval)
        else:
            self.pending.append(interval)
        return interval

    def _count(self, interval: Interval) -> None:
        m = self._metrics
        m.serving_process_cpu.inc(interval.cpu_seconds)
        for (pipeline, version, segment, stage), values in interval.keys.items():
            label = str(version)
            m.serving_cpu.labels(pipeline, label, segment, stage, "request").inc(values[2])
            m.serving_cpu.labels(pipeline, label, segment, stage, "shared").inc(values[3])

    def _write(self) -> None:
        metadata = self._metadata
        if metadata is None:
            return
        while self.pending:
            interval = self.pending[0]
            record, rows = interval.records(self.server, self.reserved_cpus)
            try:
                with metadata.unit_of_work() as uow:
                    uow.serving_usage.record(record, rows)
            except Exception as e:  # kept and retried at the next interval: never lost
                if self.failing is None:
                    logger.warning(
                        "serving usage: cannot write to the metadata store (%s); %d interval(s)"
                        " kept in memory and retried every %ss",
                        e, len(self.pending), self._every,
                    )  # fmt: skip
                self.failing = str(e)
                return
            self.pending.popleft()
        if self.failing is not None:
            logger.info("serving usage: the metadata store takes writes again")
            self.failing = None


def process_start() -> datetime:
    """When this process started (from /proc on Linux; else now, at the first call)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return datetime.fromtimestamp(boot, UTC) + timedelta(
            seconds=ticks / os.sysconf("SC_CLK_TCK")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return datetime.now(UTC)


def server_id(started: datetime) -> str:
    """``host:pid:start-unix-ms``: one server process, never reused."""
    host = socket.gethostname()[:200] or "host"
    return f"{host}:{os.getpid()}:{int(started.timestamp() * 1000)}"


def rss_bytes() -> int:
    """The process's resident set now (/proc on Linux; else its peak)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if os.uname().sysname == "Darwin" else peak * 1024)
