"""Sign in and out: a user name with its password or one of its tokens gives a session cookie
(HttpOnly, SameSite=Lax, Secure over HTTPS) that lasts ``ui_session_hours``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kiln.errors import AuthError
from kiln.ui._deps import SESSION_COOKIE, Writer, state
from kiln.ui._render import render

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no ``//host`` or scheme): never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/", why: str | None = None) -> Response:
    return render(request, "login.html", None, next=_safe_next(next), why=why)


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form(max_length=200)],
    secret: Annotated[str, Form(max_length=500)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    ui = state(request)
    try:
        principal = ui.people.login(name.strip(), secret)
    except AuthError as e:
        return render(
            request, "login.html", None, status_code=401,
            next=_safe_next(next), why=e.message, name=name,
        )  # fmt: skip
    hours = ui.settings.ui_session_hours
    opened = ui.people.open_session(principal, timedelta(hours=hours))
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, opened.secret, max_age=int(hours * 3600), path="/",
        httponly=True, samesite="lax", secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


@router.post("/logout")
def logout(request: Request, who: Writer) -> Response:
    state(request).people.close_session(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login?why=signed+out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
