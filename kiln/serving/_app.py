"""The ASGI app: the predict hot path answered from the raw body, everything else by FastAPI.

``POST /v1/pipelines/{name}/predict`` is taken here before any framework code runs: the body is
read with a size cap (``Settings.max_body_bytes``: a larger Content-Length is answered 413
before reading, a chunked body as soon as it goes over), handed with four headers to
``Predictions.handle``, and its bytes are sent back. Large bodies (batches) are predicted in a
worker thread so the event loop keeps answering single rows meanwhile (LightGBM releases the
GIL while it predicts).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
import time
from typing import Any

from fastapi import FastAPI

from kiln.serving._api import build_api
from kiln.serving._errors import ApiError, error_body
from kiln.serving._predict import Answer
from kiln.serving._service import Service
from kiln.settings import Settings

__all__ = ["ServingApp", "app_from_env", "create_app"]

_PREFIX = "/v1/pipelines/"
_SUFFIX = "/predict"
THREAD_BODY_BYTES = 32 * 1024
OTHER_BODY_BYTES = 64 * 1024
"""Cap on the body of every other request (admin writes carry a reason, not data)."""
_PREDICT_HINT = (
    "split the batch into several requests, or raise the limit:"
    " `kiln serve --max-body-bytes N` (or KILN_MAX_BODY_BYTES=N)"
)
_OTHER_HINT = "only predict requests carry data; an admin request's JSON (a reason) is small"
SWITCH_INTERVAL = 0.001
GC_THRESHOLD = 20_000

Scope = dict[str, Any]
Message = dict[str, Any]


class ServingApp:
    def __init__(self, api: FastAPI, service: Service, *, max_body: int) -> None:
        self.api = api
        self.service = service
        self._handle = service.predictions.handle
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
                name = path[len(_PREFIX) : -len(_SUFFIX)]
                if name and "/" not in name:
                    await self._predict(name, scope, receive, send)
                    return
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            await self._capped(scope, receive, send)
            return
        await self.api(scope, receive, send)

    async def _capped(self, scope: Scope, receive: Any, send: Any) -> None:
        """Any other request with a body: read it under OTHER_BODY_BYTES, then hand it on."""
        declared = _declared(scope)
        if declared > OTHER_BODY_BYTES:
            await _send(send, _too_large(OTHER_BODY_BYTES, declared, _OTHER_HINT))
            return
        body = await _body(receive, OTHER_BODY_BYTES)
        if body is None:
            await _send(send, _too_large(OTHER_BODY_BYTES, None, _OTHER_HINT))
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # the disconnect, when the client goes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.api(scope, replay, send)

    async def _predict(self, name: str, scope: Scope, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        content_type = authorization = request_id = event_time = None
        declared = 0
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"authorization":
                authorization = value
            elif key == b"x-request-id":
                request_id = value
            elif key == b"x-kiln-event-time":
                event_time = value
            elif key == b"content-length":
                declared = int(value) if value.isdigit() else 0
        if declared > self._max_body:  # refused before reading a byte of it
            await _send(send, _too_large(self._max_body, declared, _PREDICT_HINT))
            return
        body = await _body(receive, self._max_body)
        if body is None:  # a chunked body (no Content-Length) that went over the limit
            await _send(send, _too_large(self._max_body, None, _PREDICT_HINT))
            return
        call = functools.partial(
            self._handle,
            name,
            body,
            content_type=content_type,
            authorization=authorization,
            request_id=request_id,
            started=started,
            event_time=event_time,
        )
        if len(body) > THREAD_BODY_BYTES:
            answer = await asyncio.get_running_loop().run_in_executor(None, call)
        else:
            answer = call()
        await _send(send, answer)


def _declared(scope: Scope) -> int:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


async def _body(receive: Any, limit: int) -> bytes | None:
    """The request body, or None when it exceeds ``limit``."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        return None
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None  # the chunks read so far go with this frame
        chunks.append(chunk)
    return b"".join(chunks)


async def _send(send: Any, answer: Answer) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
    await send({"type": "http.response.body", "body": answer.body})


def _too_large(limit: int, declared: int | None, hint: str) -> Answer:
    size = "the body" if declared is None else f"the body ({declared:,} bytes)"
    error = ApiError(
        413,
        "body_too_large",
        f"{size} is larger than the server's limit of {limit:,} bytes"
        f" ({limit / (1024 * 1024):.4g} MiB)",
        hint=hint,
        fields=[{"field": "(body)", "problem": f"at most {limit:,} bytes"}],
    )
    body = error_body(error)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return Answer(413, body, headers)


def create_app(settings: Settings) -> ServingApp:
    """The server's ASGI app; nothing starts until the ASGI lifespan start-up."""
    service = Service(settings)
    return ServingApp(build_api(service), service, max_body=settings.max_body_bytes)


def app_from_env() -> ServingApp:
    """uvicorn's factory in each worker: Settings from the KILN_* variables ``serve`` set."""
    logger = logging.getLogger("kiln")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
        )
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    tune_process()
    return create_app(Settings())


def tune_process() -> None:
    """Process-wide settings of a server worker (never applied to a library user's process).

    The capture writer and shadow threads hold the GIL while they run Python: a 1 ms switch
    interval (not 5 ms) bounds how long they keep the event loop waiting for it. Requests make
    many short-lived objects and the capture queue holds thousands: the start-up heap is frozen
    and young collections are rarer, so the collector does not pause the loop every few requests.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 100)
