"""The predict hot path: raw body in, orjson out, no framework in between.

``Predictions.handle`` takes the body bytes and the few headers it needs and returns the status,
headers and body of the answer. It checks the token, chooses the version in the current routing
table (production, or the canary for its share of the requests), validates the body with that
version's request schema, predicts, counts, samples the request for capture and copies it to
the shadow versions (when production answered), in that order. Each answered row says which
categorical features held a value unseen in training (``unseen``, an empty list when none);
they are counted in ``kiln_unseen_categories_total``. A client ``X-Request-ID`` that is not
1-128 printable ASCII characters is replaced by a generated id, and the answer says why in
``X-Kiln-Request-ID-Replaced``. ``X-Kiln-Event-Time`` is captured as ``event_ts``. A request
refused or failed after its version was chosen is sampled too, and captured with its error.
An answered request's own thread CPU is added to its segments' usage (``_usage``).

The canary answers a request with probability ``canary_share``: decided from a hash of the
client's ``X-Request-ID`` when it sends one (a retry gets the same version, on any worker),
else at random. Without a canary the only cost is the check that there is none.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from time import thread_time

import orjson

from kiln.registry import Prediction
from kiln.serving._capture import Capture
from kiln.serving._errors import ApiError, error_body, unauthorized
from kiln.serving._event_time import parse_event_time
from kiln.serving._metrics import Metrics
from kiln.serving._request_id import REQUEST_ID, RequestIds
from kiln.serving._routing import Deployed, PipelineRoute, RoutingTable
from kiln.serving._shadow import ShadowJob, ShadowRunner
from kiln.serving._usage import UsageMeter

__all__ = ["Answer", "Predictions"]

logger = logging.getLogger("kiln.serving")

_UNKNOWN = "(unknown)"
_BATCH = "(batch)"
_JSON_TYPE = (b"content-type", b"application/json")
_CAPTURED = (b"x-kiln-captured", b"1")
_REPLACED = b"x-kiln-request-id-replaced"
_NOT_CAPTURED = (b"x-kiln-captured", b"0")
_TOKEN_HINT = "send the header 'Authorization: Bearer <token>' with the predict token"
_PRODUCTION = "production"
_CANARY = "canary"
_HASH_SPAN = float(2**64)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


class Predictions:
    def __init__(
        self,
        table: Callable[[], RoutingTable],
        metrics: Metrics,
        capture: Capture,
        shadow: Callable[[], ShadowRunner | None],
        *,
        tokens: Sequence[str] = (),
        usage: UsageMeter | None = None,
    ) -> None:
        """``tokens``: the tokens that may predict (none: predicting is open); ``usage``
        measures each answered request's CPU (on its own thread) per segment."""
        self.usage = usage or UsageMeter()
        self._table = table
        self._metrics = metrics
        self._capture = capture
        self._shadow = shadow
        self._tokens = [t.encode() for t in tokens if t]
        self._request_id = RequestIds()
        self._random = random.Random().random
        self._children: dict[tuple[str, str, str, str], _Children] = {}

    def handle(
        self,
        name: str,
        body: bytes,
        *,
        content_type: bytes | None,
        authorization: bytes | None,
        request_id: bytes | None,
        started: float,
        event_time: bytes | None = None,
    ) -> Answer:
        cpu = thread_time()
        rid, replaced = self._request_id(request_id)
        route: PipelineRoute | None = None
        deployed: Deployed | None = None
        stage = _PRODUCTION
        event_ts: datetime | None = None
        try:
            if self._tokens and not self._authorized(authorization):
                raise unauthorized("predicting needs the predict token", _TOKEN_HINT)
            table = self._table()
            route = table.pipelines.get(name)
            if route is None:
                raise _no_pipeline(name, table)
            deployed = route.production
            if deployed is None:
                raise _no_production(route)
            if route.canary is not None and self._to_canary(route, request_id):
                deployed, stage = route.canary, _CANARY
            event_ts = parse_event_time(event_time)
            if not _is_json(content_type):
                raise ApiError(
                    415,
                    "unsupported_media_type",
                    "the body must be JSON (Content-Type: application/json)",
                    hint='send {"features": {...}} or {"instances": [...]} as application/json',
                )
            rows, batch = deployed.request.parse(body)
            prediction = deployed.predictor.predict(rows)
        except Exception as e:
            error = e if isinstance(e, ApiError) else _internal_error(e, name, rid)
            _forget_frames(e, error)
            refused = self._refuse(
                error, name if route else _UNKNOWN, deployed,
                stage=stage, rid=rid, request=body, started=started, event_ts=event_ts,
            )  # fmt: skip
            if replaced is not None:
                refused.headers.append((_REPLACED, replaced))
            return refused
        seconds = time.perf_counter() - started
        n = len(rows)
        answer = self._answer(deployed, stage, n, prediction, batch=batch, rid=rid, seconds=seconds)
        sampled = self._capture.sampled(deployed.sample_rate)
        captured = False
        shadows = route.shadows if stage == _PRODUCTION else ()
        ts = datetime.now(UTC) if sampled or shadows else None
        if sampled and ts is not None:
            captured = self._capture.rows(
                deployed, stage, rid, rows, prediction,
                batch=batch, ts=ts, latency_ms=seconds * 1000.0, event_ts=event_ts,
            )  # fmt: skip
        if shadows and ts is not None:
            shadow = self._shadow()
            if shadow is not None:
                shadow.offer(ShadowJob(name, rid, rows, batch, sampled, ts, shadows, event_ts))
        answer.headers.append(_CAPTURED if captured else _NOT_CAPTURED)
        if replaced is not None:
            answer.headers.append((_REPLACED, replaced))
        self.usage.add(name, deployed.version, stage, prediction.model, thread_time() - cpu)
        return answer

    def _to_canary(self, route: PipelineRoute, request_id: bytes | None) -> bool:
        """Whether the canary answers: sticky per client request id, else at random."""
        if request_id is not None and REQUEST_ID.fullmatch(request_id):
            key = route.name.encode()
            digest = hashlib.blake2b(request_id, digest_size=8, key=key).digest()
            return int.from_bytes(digest) / _HASH_SPAN < route.canary_share
        return self._random() < route.canary_share

    def _answer(
        self,
        deployed: Deployed,
        stage: str,
        n_rows: int,
        prediction: Prediction,
        *,
        batch: bool,
        rid: str,
        seconds: float,
    ) -> Answer:
        name, label = deployed.pipeline, deployed.label
        unseen = prediction.unseen
        proba = prediction.probabilities
        if proba is not None:
            body, segment, fallbacks = _classes_body(
                name, deployed.version, prediction, proba.tolist(), batch=batch, rid=rid
            )
        elif batch:
            fallbacks = int(prediction.fallback.sum())
            body = orjson.dumps(
                {
                    "request_id": rid,
                    "pipeline": name,
                    "version": deployed.version,
                    "predictions": prediction.values.tolist(),
                    "models": prediction.model,
                    "fallback": prediction.fallback.tolist(),
                    "unseen": [()] * n_rows if unseen is None else unseen,
                }
            )
            segment = _BATCH
        else:
            segment = prediction.model[0]
            fell_back = bool(prediction.fallback[0])
            fallbacks = int(fell_back)
            body = orjson.dumps(
                {
                    "request_id": rid,
                    "pipeline": name,
                    "version": deployed.version,
                    "prediction": float(prediction.values[0]),
                    "model": segment,
                    "fallback": fell_back,
                    "unseen": () if unseen is None else unseen[0],
                }
            )
        key = (name, label, segment, stage)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = _Children(self._metrics, name, label, segment, stage)
        children.requests.inc()
        children.rows.inc(n_rows)
        if fallbacks:
            children.fallbacks.inc(fallbacks)
        if prediction.errors:
            children.model_errors.inc(prediction.errors)
        children.latency.observe(seconds)
        if unseen is not None:
            self._count_unseen(name, label, unseen)
        headers = [
            _JSON_TYPE,
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode()),
            (b"x-kiln-version", label.encode()),
        ]
        return Answer(200, body, headers)

    def _count_unseen(self, name: str, label: str, unseen: list[tuple[str, ...]]) -> None:
        counts: dict[str, int] = {}
        for features in unseen:
            for feature in features:
                counts[feature] = counts.get(feature, 0) + 1
        for feature, count in counts.items():
            self._metrics.unseen.labels(name, label, feature).inc(count)

    def _refuse(
        self,
        error: ApiError,
        pipeline: str,
        deployed: Deployed | None,
        *,
        stage: str,
        rid: str,
        request: bytes,
        started: float,
        event_ts: datetime | None,
    ) -> Answer:
        """The error answer; captured (sampled) when a version was chosen for the request."""
        code = str(error.status)
        version = deployed.label if deployed is not None else ""
        self._metrics.requests.labels(pipeline, version, code).inc()
        self._metrics.errors.labels(pipeline, error.code).inc()
        captured = False
        if deployed is not None and self._capture.sampled(deployed.sample_rate):
            latency_ms = (time.perf_counter() - started) * 1000.0
            try:
                captured = self._capture.refused(
                    deployed, stage, rid, request, error,
                    ts=datetime.now(UTC), latency_ms=latency_ms, event_ts=event_ts,
                )  # fmt: skip
            except Exception:  # capturing an error must never turn it into another one
                logger.exception("capturing refused request %s of %s failed", rid, pipeline)
        body = error_body(error)
        headers = [
            _JSON_TYPE,
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode()),
            _CAPTURED if captured else _NOT_CAPTURED,
        ]
        if deployed is not None:
            headers.append((b"x-kiln-version", deployed.label.encode()))
        headers.extend((k.encode(), v.encode()) for k, v in error.headers.items())
        return Answer(error.status, body, headers)

    def _authorized(self, header: bytes | None) -> bool:
        if header is None or header[:7].lower() != b"bearer ":
            return False
        presented = header[7:].strip()
        ok = False
        for token in self._tokens:  # every token compared, in constant time
            ok |= hmac.compare_digest(presented, token)
        return ok


def _classes_body(
    name: str,
    version: int,
    prediction: Prediction,
    proba: list[list[float]],
    *,
    batch: bool,
    rid: str,
) -> tuple[bytes, str, int]:
    """A multiclass answer: the most probable class of each row and every class's probability."""
    classes = prediction.classes or []
    probabilities = [dict(zip(classes, row, strict=True)) for row in proba]
    labels = prediction.labels()
    if batch:
        body = orjson.dumps(
            {
                "request_id": rid,
                "pipeline": name,
                "version": version,
                "predictions": labels,
                "probabilities": probabilities,
                "models": prediction.model,
                "fallback": prediction.fallback.tolist(),
                "unseen": [()] * len(labels) if prediction.unseen is None else prediction.unseen,
            }
        )
        return body, _BATCH, int(prediction.fallback.sum())
    fell_back = bool(prediction.fallback[0])
    body = orjson.dumps(
        {
            "request_id": rid,
            "pipeline": name,
            "version": version,
            "prediction": labels[0],
            "probabilities": probabilities[0],
            "model": prediction.model[0],
            "fallback": fell_back,
            "unseen": prediction.unseen_of(0),
        }
    )
    return body, prediction.model[0], int(fell_back)


class _Children:
    """The metric children of one (pipeline, version, segment, stage), looked up once."""

    __slots__ = ("fallbacks", "latency", "model_errors", "requests", "rows")

    def __init__(self, m: Metrics, pipeline: str, version: str, segment: str, stage: str) -> None:
        self.requests = m.requests.labels(pipeline, version, "200")
        self.rows = m.rows.labels(pipeline, version, stage)
        self.fallbacks = m.fallbacks.labels(pipeline, version, stage)
        self.model_errors = m.model_errors.labels(pipeline, version, stage)
        self.latency = m.latency.labels(pipeline, version, segment)


def _forget_frames(*errors: BaseException) -> None:
    """Drop the traceback and chained exceptions of a refusal, once answered and logged.

    A traceback holds the frames it went through, and their locals: ``handle``'s ``body`` and
    the error itself (a reference cycle), a pydantic ``ValidationError`` chained as context and
    the whole parsed batch it quotes. Only the cycle collector would free them, and a server
    worker runs it rarely (``tune_process``): each refused body would stay in memory for good.
    """
    for error in errors:
        error.__traceback__ = None
        error.__context__ = None
        error.__cause__ = None


def _internal_error(error: Exception, name: str, rid: str) -> ApiError:
    """A bug or a broken fallback model: logged once here (with its traceback), answered 500."""
    logger.exception("predict %s failed (request %s)", name, rid)
    return ApiError(500, "internal_error", f"the prediction failed: {type(error).__name__}")


def _is_json(content_type: bytes | None) -> bool:
    if not content_type:
        return False
    kind = content_type.split(b";", 1)[0].strip().lower()
    if kind == b"application/json":
        return True
    return kind.startswith(b"application/") and kind.endswith(b"+json")


def _no_pipeline(name: str, table: RoutingTable) -> ApiError:
    if table.read_at is None:
        return ApiError(
            503,
            "not_ready",
            "the server has not read the registry yet",
            hint="retry in a moment; GET /readyz says when it is ready",
            headers={"retry-after": "1"},
        )
    known = ", ".join(sorted(table.pipelines)) or "none"
    return ApiError(
        404,
        "pipeline_not_found",
        f"no pipeline {name!r} in the registry (known pipelines: {known})",
        hint="`kiln run kiln.yaml` registers a pipeline; GET /v1/pipelines lists them",
    )


def _no_production(route: PipelineRoute) -> ApiError:
    name = route.name
    if route.registry_production is None:
        message = f"pipeline {name!r} has no production version"
    else:
        why = route.missing() or f"{name} v{route.registry_production}: not loaded yet"
        message = f"pipeline {name!r} has no loaded production version ({why})"
    return ApiError(
        503,
        "no_production_version",
        message,
        hint=f"`kiln promote {name} VERSION` puts a version in production;"
        " `kiln models list` shows the versions",
    )
