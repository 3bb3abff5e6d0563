"""The FastAPI app: the OpenAPI spec, the pipeline reads, the admin writes, health and metrics.

``POST /v1/pipelines/{name}/predict`` is declared here for the spec, and answered by the same
``Predictions.handle`` as the raw ASGI fast path in front of this app (see ``_app``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from kiln import __version__
from kiln.errors import KilnError
from kiln.serving._errors import ApiError, status_of
from kiln.serving._metrics import CONTENT_TYPE_LATEST
from kiln.serving._models import (
    ErrorResponse,
    FeatureInfo,
    PipelineDetail,
    PipelineSummary,
    PredictBatchResponse,
    PredictResponse,
    PromoteRequest,
    Readiness,
    ReloadError,
    RollbackRequest,
    TransitionResponse,
    VersionInfo,
    predict_request_schema,
)
from kiln.serving._routing import PipelineRoute
from kiln.serving._service import Service

__all__ = ["build_api"]

CAPTURED_HEADER = (
    "`1`: this request was sampled for capture and its record (one per row) was accepted into"
    " this server process's in-memory capture queue. It is not on storage yet: each process"
    " writes its queue at least every `KILN_CAPTURE_FLUSH_SECONDS` (default 1 s) or every"
    " `KILN_CAPTURE_FLUSH_ROWS` captures (default 5,000), whichever comes first. A process"
    " stopped with SIGTERM writes every capture it accepted; one killed with SIGKILL (or out of"
    " memory) loses those accepted since its last write, about the last flush interval of"
    " traffic. `0`: not sampled, or dropped because the backlog was full"
    " (`kiln_capture_dropped_total`)."
)

_bearer = HTTPBearer(auto_error=False, description="The predict token, or the admin token.")
Token = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


def build_api(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(service.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.stop)

    api = FastAPI(
        title="Kiln prediction server",
        version=__version__,
        description="Predictions from the production version of each pipeline (or its canary,"
        " for the canary's share of requests), with fallback, shadow versions and capture;"
        " stage changes for admins.",
        lifespan=lifespan,
    )
    _install_error_handlers(api)

    @api.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get(
        "/readyz",
        tags=["health"],
        summary="Ready: the registry was read and every production version is loaded",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
    )
    def readyz() -> Any:
        table = service.table()
        missing = table.missing()
        body = Readiness(
            ready=not missing,
            missing=missing,
            registry_error=table.registry_error,
            capture_error=service.capture_error(),
        )
        return JSONResponse(body.model_dump(), status_code=503 if missing else 200)

    @api.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @api.get(
        "/v1/pipelines",
        tags=["pipelines"],
        summary="Pipelines in the registry and the versions that serve them",
        response_model=list[PipelineSummary],
        responses=_errors(401, 503),
    )
    def list_pipelines(token: Token) -> list[PipelineSummary]:
        service.check_read(_credentials(token))
        table = service.table()
        return [_summary(route) for _, route in sorted(table.pipelines.items())]

    @api.get(
        "/v1/pipelines/{name}",
        tags=["pipelines"],
        summary="A pipeline: production, canary and shadow versions, features, reload errors",
        response_model=PipelineDetail,
        responses=_errors(401, 404, 503),
    )
    def get_pipeline(name: str, token: Token) -> PipelineDetail:
        service.check_read(_credentials(token))
        route = service.table().pipelines.get(name)
        if route is None:
            raise _unknown(name, service)
        return _detail(route)

    @api.post(
        "/v1/pipelines/{name}/predict",
        tags=["predict"],
        summary="Predict one row or a batch with the production version (or the canary)",
        description="The answer's `X-Kiln-Captured` header says whether the request was"
        " captured for replay and monitoring: " + CAPTURED_HEADER,
        response_model=PredictResponse | PredictBatchResponse,
        responses={
            200: {
                "description": "The prediction(s)",
                "headers": {
                    "X-Kiln-Captured": {
                        "description": CAPTURED_HEADER,
                        "schema": {"type": "string", "enum": ["0", "1"]},
                    }
                },
            },
            **_errors(400, 401, 404, 413, 415, 422, 500, 503),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": predict_request_schema()}},
            }
        },
    )
    async def predict(name: str, request: Request, token: Token) -> Response:
        started = time.perf_counter()
        body = await request.body()
        headers = request.headers
        answer = service.predictions.handle(
            name,
            body,
            content_type=_header(headers.get("content-type")),
            authorization=_header(headers.get("authorization")),
            request_id=_header(headers.get("x-request-id")),
            started=started,
        )
        return Response(
            answer.body,
            status_code=answer.status,
            headers={k.decode(): v.decode() for k, v in answer.headers if k != b"content-length"},
        )

    @api.post(
        "/v1/pipelines/{name}/promote",
        tags=["admin"],
        summary="Put a version in production (the previous one is archived); audited",
        response_model=TransitionResponse,
        responses=_errors(401, 403, 404, 409, 413, 422, 503),
    )
    def promote(
        name: str, body: PromoteRequest, request: Request, token: Token
    ) -> TransitionResponse:
        service.check_admin(_credentials(token))
        change = service.stages().promote(
            name, body.version, actor=_actor(request), reason=body.reason
        )
        return _transition(change, service)

    @api.post(
        "/v1/pipelines/{name}/rollback",
        tags=["admin"],
        summary="Put back the version that served before the current one; audited",
        response_model=TransitionResponse,
        responses=_errors(401, 403, 404, 409, 413, 422, 503),
    )
    def rollback(
        name: str, body: RollbackRequest, request: Request, token: Token
    ) -> TransitionResponse:
        service.check_admin(_credentials(token))
        change = service.stages().rollback(name, actor=_actor(request), reason=body.reason)
        return _transition(change, service)

    return api


def _credentials(token: HTTPAuthorizationCredentials | None) -> str | None:
    return None if token is None else token.credentials


def _header(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1")


def _actor(request: Request) -> str:
    client = request.client
    return f"api:{client.host if client else 'unknown'}"


def _transition(change: Any, service: Service) -> TransitionResponse:
    if service.follower is not None:
        service.follower.wake()
    return TransitionResponse(
        pipeline=change.pipeline,
        action=change.action,
        version=change.version,
        stage=change.stage,
        previous_stage=change.previous_stage,
        from_version=change.from_version,
        changed=change.changed,
        message=str(change),
    )


def _unknown(name: str, service: Service) -> ApiError:
    table = service.table()
    if table.read_at is None:
        return ApiError(503, "not_ready", "the server has not read the registry yet")
    known = ", ".join(sorted(table.pipelines)) or "none"
    return ApiError(
        404,
        "pipeline_not_found",
        f"no pipeline {name!r} in the registry (known pipelines: {known})",
        hint="`kiln run kiln.yaml` registers a pipeline",
    )


def _reload_error(route: PipelineRoute) -> ReloadError | None:
    last = route.last_reload_error
    return None if last is None else ReloadError(**last.describe())


def _summary(route: PipelineRoute) -> PipelineSummary:
    return PipelineSummary(
        name=route.name,
        production=route.production.version if route.production else None,
        registry_production=route.registry_production,
        canary=route.canary.version if route.canary else None,
        canary_share=route.canary_share if route.canary else None,
        shadows=[d.version for d in route.shadows],
        last_reload_error=_reload_error(route),
    )


def _detail(route: PipelineRoute) -> PipelineDetail:
    production = route.production
    features: list[FeatureInfo] = []
    if production is not None:
        p = production.predictor
        features = [FeatureInfo(**f) for f in p.schema.to_dict()]
        if p.segment_column and p.segment_column not in p.schema.names:
            features.append(FeatureInfo(name=p.segment_column, kind="segment", dtype="string"))
    return PipelineDetail(
        name=route.name,
        production=VersionInfo(**production.describe()) if production else None,
        registry_production=route.registry_production,
        canary=VersionInfo(**route.canary.describe()) if route.canary else None,
        canary_share=route.canary_share if route.canary else None,
        registry_canary=route.registry_canary,
        shadows=[VersionInfo(**d.describe()) for d in route.shadows],
        registry_shadows=list(route.registry_shadows),
        segment_column=production.segment_column if production else None,
        features=features,
        last_reload_error=_reload_error(route),
        reload_errors=[ReloadError(**r.describe()) for r in route.refusals],
    )


def _json_error(
    status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _install_error_handlers(api: FastAPI) -> None:
    def kiln_error(_: Request, exc: Exception) -> Response:
        error = exc if isinstance(exc, KilnError) else KilnError(str(exc))
        headers = error.headers if isinstance(error, ApiError) else None
        if error.code == "not_authorized" and headers is None:
            headers = {"www-authenticate": "Bearer"}
        return _json_error(status_of(error), error.to_dict(), headers)

    def invalid(_: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        fields = [
            {
                "field": ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "(body)",
                "problem": str(e.get("msg", "invalid")),
            }
            for e in errors[:20]
        ]
        shown = "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:5])
        body = {
            "code": "invalid_input",
            "message": f"{len(errors)} problem(s) in the request: {shown}",
            "hint": "GET /openapi.json describes every request body",
            "fields": fields,
        }
        return _json_error(422, body)

    def http_error(_: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        headers = exc.headers if isinstance(exc, HTTPException) else None
        return _json_error(status, {"code": code, "message": str(detail)}, headers)

    handlers: dict[Any, Callable[[Request, Exception], Response]] = {
        KilnError: kiln_error,
        RequestValidationError: invalid,
        HTTPException: http_error,
    }
    for exc, handler in handlers.items():
        api.add_exception_handler(exc, handler)
