"""Prometheus metrics of one server process; with several workers, prometheus multiprocess mode.

``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder before it starts the workers, so
each worker writes its counters there and ``/metrics`` of any worker sums them all.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
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
        self.captured = Counter(
            "kiln_captured",
            "Records handed to the capture store (one per answered row, one per refused"
            " request), by pipeline and stage.",
            ["pipeline", "stage"],
            registry=reg,
        )
        self.capture_dropped = Counter(
            "kiln_capture_dropped",
            "Sampled records not captured because the capture queue was full.",
            ["pipeline", "stage"],
            registry=reg,
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

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def process_exited(self) -> None:
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())
