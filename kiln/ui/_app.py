"""The management app of `kiln ui`: JSON under ``/api`` (in the OpenAPI spec at
``/api/openapi.json``) and web pages over the same read queries and actions.

Every module of ``kiln.ui.api`` and ``kiln.ui.pages`` that defines ``router`` contributes it,
so that a page is one module. Errors are answered by kind, never with a traceback: JSON
``{"error", "message", "hint"}`` under ``/api``, an error page elsewhere (a page that needs a
sign-in redirects to the login page and comes back after it).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from kiln.errors import AuthError, ForbiddenError, KilnError, NotFoundError, StoreError
from kiln.registry.people import People
from kiln.registry.stages import StageError
from kiln.settings import Settings
from kiln.stores import Stores, open_stores
from kiln.ui import api, pages
from kiln.ui._cache import Recent
from kiln.ui._deps import SESSION_COOKIE, CsrfError, UiState
from kiln.ui._render import render
from kiln.ui.cost import warm_cost

__all__ = ["create_app", "status_of"]

log = logging.getLogger("kiln.ui")
STATIC = Path(__file__).parent / "static"


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def status_of(error: KilnError) -> int:
    if isinstance(error, CsrfError | ForbiddenError):
        return 403
    if isinstance(error, AuthError):
        return 401
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, StageError):
        return 409
    if isinstance(error, StoreError):
        return 503
    return 400


def _routers(package: ModuleType) -> list[ModuleType]:
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, "router"):
            found.append(module)
    return found


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def create_app(settings: Settings, stores: Stores | None = None) -> FastAPI:
    """The app over ``stores`` (opened from ``settings`` when None, and closed at shutdown)."""
    owned = stores is None
    opened = open_stores(settings) if stores is None else stores

    ui = UiState(
        settings, opened, People(opened.metadata, settings.admin_token),
        Recent(settings.ui_cost_cache_seconds),
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warm_cost(ui)  # the cost of every pipeline takes seconds at scale: start it now
        yield
        ui.recent.close()
        if owned:
            opened.close()

    app = FastAPI(
        title="Kiln management API",
        description="Reads and stage changes of Kiln's registry (not the prediction path).",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.kiln = ui

    plotly_js = _plotly_js()

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        """plotly.js from the installed plotly package: the page works offline, no CDN."""
        return FileResponse(
            plotly_js, media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )  # fmt: skip

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in _routers(api) + _routers(pages):
        app.include_router(module.router)
    _errors(app)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(KilnError)
    async def kiln_error(request: Request, error: KilnError) -> Response:
        status = status_of(error)
        if _is_api(request):
            body = {"error": error.code, "message": error.message, "hint": error.hint}
            return JSONResponse(body, status_code=status)
        if status == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            why = "expired" if request.cookies.get(SESSION_COOKIE) else "signin"
            return RedirectResponse(f"/login?next={quote(target)}&why={why}", status_code=303)
        return render(request, "error.html", None, status_code=status, status=status, error=error)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in error.errors()
        ]
        message = "the request is not valid: " + "; ".join(problems)
        hint = "see /api/docs for what each endpoint takes"
        if _is_api(request):
            body = {"error": "bad_request", "message": message, "hint": hint}
            return JSONResponse(body, status_code=400)
        shown = KilnError(message, hint="go back and check the form")
        return render(request, "error.html", None, status_code=400, status=400, error=shown)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        message = "no such page" if error.status_code == 404 else str(error.detail)
        if _is_api(request):
            body = {"error": "http_error", "message": message, "hint": "see /api/docs"}
            return JSONResponse(body, status_code=error.status_code)
        shown = KilnError(message, hint="the catalogue lists every pipeline")
        return render(
            request, "error.html", None,
            status_code=error.status_code, status=error.status_code, error=shown,
        )  # fmt: skip

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        message = f"internal error ({type(error).__name__}); the server log has the details"
        if _is_api(request):
            body = {"error": "internal_error", "message": message, "hint": None}
            return JSONResponse(body, status_code=500)
        shown = KilnError(message, hint="report it with the server log")
        return render(request, "error.html", None, status_code=500, status=500, error=shown)
