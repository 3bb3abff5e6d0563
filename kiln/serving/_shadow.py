"""Shadow: versions in stage ``shadow`` see a copy of each production request, off the hot path.

The request handler only appends a job to a bounded queue (a full queue drops the copy and
counts it in ``kiln_shadow_dropped_total``); one background thread wakes when copies arrive,
lets them gather for ``linger`` seconds, then runs each shadow version once over up to
``max_rows`` of those rows (one model call per segment for many requests, whose compute
releases the GIL), and captures its answers and errors beside production's, under the same
request ids, for the requests that production sampled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from time import thread_time
from typing import Any

from kiln.registry import Prediction
from kiln.serving._capture import Capture
from kiln.serving._metrics import Metrics
from kiln.serving._routing import Deployed
from kiln.serving._usage import UsageMeter

__all__ = ["ShadowJob", "ShadowRunner"]

logger = logging.getLogger("kiln.serving")


@dataclass(frozen=True, slots=True)
class ShadowJob:
    pipeline: str
    request_id: str
    rows: list[dict[str, Any]]
    batch: bool
    sampled: bool
    ts: datetime
    shadows: tuple[Deployed, ...]
    event_ts: datetime | None = None


class ShadowRunner:
    def __init__(
        self,
        capture: Capture,
        metrics: Metrics,
        *,
        max_queue: int = 10_000,
        max_rows: int = 256,
        linger: float = 0.02,
        usage: UsageMeter | None = None,
    ) -> None:
        self._capture = capture
        self._usage = usage
        self._metrics = metrics
        self._max_queue = max_queue
        self._max_rows = max_rows
        self._linger = linger
        self._queue: deque[ShadowJob] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self.done = 0
        """Jobs processed (each shadow version of each copied request)."""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kiln-shadow", daemon=True)
            self._thread.start()

    def offer(self, job: ShadowJob) -> bool:
        """Queue a copy of a request; False (counted) when the queue is full. Never blocks."""
        with self._lock:
            full = self._closing or len(self._queue) >= self._max_queue
            if not full:
                self._queue.append(job)
        if full:
            self._metrics.shadow_dropped.labels(job.pipeline).inc()
            return False
        if not self._wake.is_set():
            self._wake.set()
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Predict what is queued (until ``timeout``), then stop; the rest is dropped, counted."""
        with self._lock:
            self._closing = True
        self._deadline = time.monotonic() + timeout
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
        with self._lock:
            left, self._queue = list(self._queue), deque()
        for job in left:
            self._metrics.shadow_dropped.labels(job.pipeline).inc()
        if left:
            logger.warning("shadow: %d copied requests not predicted at shutdown", len(left))

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._closing:
                time.sleep(self._linger)  # gather copies: one model call for many requests
            self._wake.clear()
            while jobs := self._take():
                try:
                    self._process(jobs)
                except Exception:  # a bug here must not stop shadowing: log it and go on
                    logger.exception("shadow: predicting %d copied requests failed", len(jobs))
                time.sleep(0)  # let the event loop take the GIL between chunks
                if self._closing and time.monotonic() >= self._deadline:
                    return
            if self._closing:
                return

    def _take(self) -> list[ShadowJob]:
        jobs: list[ShadowJob] = []
        rows = 0
        with self._lock:
            while self._queue and rows < self._max_rows:
                job = self._queue.popleft()
                jobs.append(job)
                rows += len(job.rows)
        return jobs

    def _process(self, jobs: list[ShadowJob]) -> None:
        groups: dict[int, tuple[Deployed, list[ShadowJob]]] = {}
        for job in jobs:
            for deployed in job.shadows:
                groups.setdefault(id(deployed), (deployed, []))[1].append(job)
        for deployed, group in groups.values():
            self._predict(deployed, group)
            self.done += len(group)

    def _predict(self, deployed: Deployed, jobs: list[ShadowJob]) -> None:
        rows = [row for job in jobs for row in job.rows]
        pipeline, label = deployed.pipeline, deployed.label
        cpu = thread_time()
        started = time.perf_counter()
        prediction: Prediction | None
        try:
            prediction = deployed.predictor.predict(rows)
            error = None
        except Exception as e:  # a failing shadow version is evidence, not an outage
            prediction, error = None, f"{type(e).__name__}: {e}"
        seconds = time.perf_counter() - started
        m = self._metrics
        m.shadow_latency.labels(pipeline, label).observe(seconds)
        m.rows.labels(pipeline, label, "shadow").inc(len(rows))
        if prediction is None:
            m.model_errors.labels(pipeline, label, "shadow").inc()
        else:
            if prediction.errors:
                m.model_errors.labels(pipeline, label, "shadow").inc(prediction.errors)
            fallbacks = int(prediction.fallback.sum())
            if fallbacks:
                m.fallbacks.labels(pipeline, label, "shadow").inc(fallbacks)
        start = 0
        for job in jobs:
            end = start + len(job.rows)
            if job.sampled:
                self._capture.rows(
                    deployed,
                    "shadow",
                    job.request_id,
                    job.rows,
                    None if prediction is None else prediction.rows(start, end),
                    batch=job.batch,
                    ts=job.ts,
                    latency_ms=seconds * 1000.0,
                    error=error,
                    event_ts=job.event_ts,
                )
            start = end
        if self._usage is not None and prediction is not None:
            self._count(deployed, jobs, prediction.model, thread_time() - cpu)

    def _count(
        self, deployed: Deployed, jobs: list[ShadowJob], models: list[str], cpu: float
    ) -> None:
        """The shadow version's usage: each copied request's share (by rows) of the CPU."""
        usage = self._usage
        if usage is None or not models:
            return
        start = 0
        for job in jobs:
            end = start + len(job.rows)
            share = cpu * (end - start) / len(models)
            usage.add(deployed.pipeline, deployed.version, "shadow", models[start:end], share)
            start = end
