"""Capture: one record per answered row of the sampled requests, handed to the capture writer.

``CaptureWriter.offer`` never blocks: an accepted capture is counted in
``kiln_capture_queued_total`` (and answered ``X-Kiln-Captured: 1``), and in
``kiln_capture_written_total`` once it is on storage; when the writer's backlog is full the
capture (never the request) is dropped and counted in ``kiln_capture_dropped_total``.
The rows of a batch are captured as ``<request id>:<index>``. A request that a version
refused or failed on (bad JSON, too many rows, invalid fields, a crash) is captured as one
record with no prediction, the error and its HTTP ``status`` (500 for a version that failed on
rows it had taken, e.g. a shadow): that is how a version's live error rate is known
(``kiln.monitoring.live``). An answered row's features are stored typed (the version's request
schema, ``RequestSchema.capture_type``); a refused request's, as bounded JSON text. Each
answered row records the features whose value was unseen in training (``unseen``); a row
that the fallback answered because of them
(``unseen_categories: fallback``) is not a model error.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from kiln.registry import Prediction
from kiln.serving._errors import ApiError
from kiln.serving._metrics import Metrics
from kiln.serving._routing import Deployed
from kiln.stores import CaptureRecord, CaptureWriter

__all__ = ["Capture"]

NO_MODEL = "(none)"
MAX_ERROR_CHARS = 500
MAX_REFUSED_KEYS = 256


class Capture:
    def __init__(self, writer: CaptureWriter | None, metrics: Metrics) -> None:
        self._writer = writer
        self._metrics = metrics
        self._random = random.Random().random
        self._counters: dict[tuple[str, str], tuple[Any, Any]] = {}

    def attach(self, writer: CaptureWriter) -> None:
        self._writer = writer

    def sampled(self, rate: float) -> bool:
        if rate <= 0.0 or self._writer is None:
            return False
        return rate >= 1.0 or self._random() < rate

    def rows(
        self,
        deployed: Deployed,
        stage: str,
        request_id: str,
        rows: Sequence[dict[str, Any]],
        prediction: Prediction | None,
        *,
        batch: bool,
        ts: datetime,
        latency_ms: float,
        error: str | None = None,
        event_ts: datetime | None = None,
    ) -> bool:
        """Offer one record per row; True when every one was accepted.

        ``prediction`` None means the version failed on these rows (``error`` says how).
        """
        writer = self._writer
        if writer is None:
            return False
        col = deployed.segment_column
        known = deployed.segments
        accepted = 0
        labels, probabilities = _classes_of(prediction)
        types = deployed.request.capture_type
        for i, row in enumerate(rows):
            raw = row.get(col) if col else None
            segment = None if raw is None else str(raw)
            unseen: tuple[str, ...] | None = None
            if prediction is None:
                model, fallback, value, why = NO_MODEL, False, None, error
            else:
                unseen = prediction.unseen_of(i)
                model = prediction.model[i]
                fallback = bool(prediction.fallback[i])
                value = float(prediction.values[i])
                why = None
                if fallback and segment in known and not (unseen and deployed.unseen_fallback):
                    why = (
                        f"segment model {segment!r} failed or gave a non-finite value;"
                        " the fallback answered"
                    )
            record = CaptureRecord(
                request_id=f"{request_id}:{i}" if batch else request_id,
                ts=ts,
                pipeline=deployed.pipeline,
                version=deployed.version,
                stage=stage,
                segment=segment,
                model=model,
                fallback=fallback,
                features=row,
                prediction=value,
                error=why,
                latency_ms=latency_ms,
                label=None if labels is None else labels[i],
                probabilities=None if probabilities is None else probabilities[i],
                unseen=unseen,
                status=200 if prediction is not None else 500,
                event_ts=event_ts,
                feature_types=types,
            )
            accepted += writer.offer(record)
        self._count(deployed.pipeline, stage, accepted, len(rows) - accepted)
        return accepted == len(rows)

    def refused(
        self,
        deployed: Deployed,
        stage: str,
        request_id: str,
        body: bytes,
        error: ApiError,
        *,
        ts: datetime,
        latency_ms: float,
        event_ts: datetime | None = None,
    ) -> bool:
        """Offer one record of a request that ``deployed`` refused or failed on; True if taken.

        Its features are what the body holds, as far as it parses: the ``features`` object, or
        the first of the ``instances``, or nothing; bounded as the version bounds texts
        (``serving.max_text_length``): a longer key is left out, a longer text (or a list or
        object longer as JSON) is captured as null (the error says what it was), and at most
        ``MAX_REFUSED_KEYS`` keys are kept.
        """
        writer = self._writer
        if writer is None:
            return False
        features = _bounded(_features_of(body), deployed.request.max_text)
        col = deployed.segment_column
        raw = features.get(col) if col else None
        segment = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else None
        text = f"{error.status} {error.code}: {error.message}"
        if len(text) > MAX_ERROR_CHARS:
            text = text[: MAX_ERROR_CHARS - 3] + "..."
        record = CaptureRecord(
            request_id=request_id,
            ts=ts,
            pipeline=deployed.pipeline,
            version=deployed.version,
            stage=stage,
            segment=segment,
            model=NO_MODEL,
            fallback=False,
            features=features,
            prediction=None,
            error=text,
            latency_ms=latency_ms,
            unseen=None,
            status=error.status,
            event_ts=event_ts,
            feature_types=deployed.request.capture_type,
        )
        accepted = writer.offer(record)
        self._count(deployed.pipeline, stage, int(accepted), int(not accepted))
        return accepted

    def _count(self, pipeline: str, stage: str, accepted: int, dropped: int) -> None:
        key = (pipeline, stage)
        counters = self._counters.get(key)
        if counters is None:
            m = self._metrics
            counters = (m.capture_queued.labels(*key), m.capture_dropped.labels(*key))
            self._counters[key] = counters
        if accepted:
            counters[0].inc(accepted)
        if dropped:
            counters[1].inc(dropped)


def _classes_of(
    prediction: Prediction | None,
) -> tuple[list[str] | None, list[dict[str, float]] | None]:
    """A multiclass answer's label and class probabilities per row (None for the others)."""
    if prediction is None or prediction.probabilities is None:
        return None, None
    classes = prediction.classes or []
    rows = prediction.probabilities.tolist()
    return prediction.labels(), [dict(zip(classes, r, strict=True)) for r in rows]


def _bounded(features: dict[str, Any], max_text: int) -> dict[str, Any]:
    """The features of a refused request, with nothing larger than a valid row could hold."""
    out: dict[str, Any] = {}
    for key, value in features.items():
        if len(out) >= MAX_REFUSED_KEYS:
            break
        if len(key) > max_text:
            continue
        if isinstance(value, str):
            fits = len(value) <= max_text
        else:
            fits = not isinstance(value, list | dict) or len(orjson.dumps(value)) <= max_text
        out[key] = value if fits else None
    return out


def _features_of(body: bytes) -> dict[str, Any]:
    """The ``features`` object of a request body, else its first instance, else {}."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    features = parsed.get("features")
    if isinstance(features, dict):
        return features
    instances = parsed.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        return instances[0]
    return {}
