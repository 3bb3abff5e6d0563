"""Prometheus metrics of one server process; with several workers, prometheus multiprocess mode.

``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder (``multiprocess_dir``) before it
starts the workers, so each worker writes its counters there and ``/metrics`` of any worker sums
them all. The folder is named after the serving process (``kiln-metrics-<pid>-*``): a server
killed with SIGKILL cannot remove it, so the next ``serve`` removes those of dead processes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from kiln.stores.metadata.locks import pid_alive

__all__ = ["CONTENT_TYPE_LATEST", "CaptureMetrics", "Metrics", "multiprocess_dir"]

logger = logging.getLogger("kiln.serving")

_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
_DIR_PREFIX = "kiln-metrics-"
_DIR_NAME = re.compile(rf"{_DIR_PREFIX}(\d+)-.+")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """Every metric the server exports. Label values: ``version`` is "" when no version
    answered; ``pipeline`` is "(unknown)" for names that are not registered pipelines."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = _MULTIPROC in os.environ
        reg = self.registry
        self.requests = Counter(
            "kiln_requests",
            "Prediction requests answered, by pipeline, version and HTTP status code.",
            ["pipeline", "version", "code"],
            registry=reg,
        )
        self.errors = Counter(
            "kiln_request_errors",
            "Prediction requests answered with an error, by pipeline and error code.",
            ["pipeline", "error"],
            registry=reg,
        )
        self.rows = Counter(
            "kiln_predicted_rows",
            "Rows predicted, by pipeline, version and stage (production, canary or shadow).",
            ["pipeline", "version", "stage"],
            registry=reg,
        )
        self.fallbacks = Counter(
            "kiln_fallbacks",
            "Rows answered by the fallback model (unknown segment or failing segment model).",
            ["pipeline", "version", "stage"],
            registry=reg,
        )
        self.model_errors = Counter(
            "kiln_model_errors",
            "Segment-model calls that raised or returned a non-finite value (rows fell back),"
            " and shadow predictions that failed.",
            ["pipeline", "version", "stage"],
            registry=reg,
        )
        self.unseen = Counter(
            "kiln_unseen_categories",
            "Categorical values never seen in training, in the rows answered, by pipeline,"
            " version and feature (answered as the version's serving.unseen_categories says).",
            ["pipeline", "version", "feature"],
            registry=reg,
        )
        self.capture_queued = Counter(
            "kiln_capture_queued",
            "Capture records accepted into the server's in-memory queue (one per answered row,"
            " one per refused request; answered with X-Kiln-Captured: 1), by pipeline and stage."
            " Not yet on storage: see kiln_capture_written_total.",
            ["pipeline", "stage"],
            registry=reg,
        )
        self.capture_written = Counter(
            "kiln_capture_written",
            "Capture records written to the capture store, by pipeline and stage.",
            ["pipeline", "stage"],
            registry=reg,
        )
        self.capture_dropped = Counter(
            "kiln_capture_dropped",
            "Sampled records not captured because the capture backlog was full (rows or bytes).",
            ["pipeline", "stage"],
            registry=reg,
        )
        self.capture_write_errors = Counter(
            "kiln_capture_write_errors",
            "Capture files that failed to write (their records are kept and retried).",
            ["pipeline"],
            registry=reg,
        )
        self.capture_rejected = Counter(
            "kiln_capture_rejected",
            "Capture records that could not be stored at all (a value of the wrong type).",
            ["pipeline"],
            registry=reg,
        )
        self.capture_backlog_rows = Gauge(
            "kiln_capture_backlog_rows",
            "Capture records accepted and not written yet (queued, or kept after failed writes).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.capture_backlog_bytes = Gauge(
            "kiln_capture_backlog_bytes",
            "Arrow bytes of the capture records not written yet (estimated for the newest).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.shadow_dropped = Counter(
            "kiln_shadow_dropped",
            "Requests not copied to the shadow versions because the shadow queue was full.",
            ["pipeline"],
            registry=reg,
        )
        self.reload_failures = Counter(
            "kiln_reload_failures",
            "Attempts to load a production, canary or shadow version that were refused"
            " (integrity, environment mismatch, unreadable package), and failed registry reads.",
            ["pipeline"],
            registry=reg,
        )
        self.latency = Histogram(
            "kiln_request_latency_seconds",
            "Time to answer a prediction request, by pipeline, version and segment model"
            " ('(batch)' for batches).",
            ["pipeline", "version", "segment"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.shadow_latency = Histogram(
            "kiln_shadow_latency_seconds",
            "Time a shadow version took to predict one batch of copied requests.",
            ["pipeline", "version"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )

        self.serving_cpu = Counter(
            "kiln_serving_cpu_seconds",
            "CPU seconds of the server spent per pipeline, version, segment and stage: kind"
            " 'request' is measured on the requests' own threads, 'shared' is the rest of the"
            " process's CPU (HTTP, capture, shadows, reloads) split by requests. Counted every"
            " KILN_USAGE_FLUSH_SECONDS.",
            ["pipeline", "version", "segment", "stage", "kind"],
            registry=reg,
        )
        self.serving_process_cpu = Counter(
            "kiln_serving_process_cpu_seconds",
            "CPU seconds of the server processes (every thread, from the process start),"
            " counted every KILN_USAGE_FLUSH_SECONDS.",
            registry=reg,
        )

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def process_exited(self) -> None:
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())


class CaptureMetrics:
    """The capture writer's events (``kiln.stores.capture.CaptureEvents``) as metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def written(self, pipeline: str, stage: str, rows: int) -> None:
        self._metrics.capture_written.labels(pipeline, stage).inc(rows)

    def write_failed(self, pipeline: str) -> None:
        self._metrics.capture_write_errors.labels(pipeline).inc()

    def rejected(self, pipeline: str, rows: int) -> None:
        self._metrics.capture_rejected.labels(pipeline).inc(rows)

    def backlog(self, rows: int, nbytes: int) -> None:
        self._metrics.capture_backlog_rows.set(rows)
        self._metrics.capture_backlog_bytes.set(nbytes)


def multiprocess_dir(parent: str | None = None) -> str:
    """A fresh metrics folder named after this process, after removing those of dead ones."""
    parent = parent or tempfile.gettempdir()
    remove_stale_dirs(parent)
    return tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-", dir=parent)


def remove_stale_dirs(parent: str) -> list[Path]:
    """Remove the ``kiln-metrics-<pid>-*`` folders in ``parent`` whose process is dead."""
    removed = []
    for path in sorted(Path(parent).glob(f"{_DIR_PREFIX}*")):
        match = _DIR_NAME.fullmatch(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        if pid_alive(int(match[1])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        logger.info(
            "removed %d metrics folder(s) of server processes that are gone: %s",
            len(removed), ", ".join(str(p) for p in removed),
        )  # fmt: skip
    return removed
