"""Sign in and out: a user name with its password or one of its tokens gives a session cookie
(HttpOnly, SameSite=Lax, Secure over HTTPS) that lasts ``ui_session_hours``."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kiln.errors import AuthError
from kiln.ui._deps import SESSION_COOKIE, Writer, state
from kiln.ui._render import render, safe_path

router = APIRouter(include_in_schema=False)


WHY = {
    "signin": "Sign in to see this page.",
    "expired": "Your session has expired or was ended: sign in again.",
    "signed_out": "You are signed out.",
}
"""What the login page may say when sent here (a code in the link, never free text: a link
must not make the page say anything)."""


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/", why: str | None = None) -> Response:
    return render(request, "login.html", None, next=safe_path(next), why=WHY.get(why or ""))


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form(max_length=200)],
    secret: Annotated[str, Form(max_length=500)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    ui = state(request)
    throttle = _throttle(request)
    who = (request.client.host if request.client else "?", name.strip())
    wait = throttle.wait(who)
    if wait:
        return render(
            request, "login.html", None, status_code=429, next=safe_path(next), name=name,
            why=f"Too many failed sign-ins for this name from this address: wait {wait} s.",
        )  # fmt: skip
    try:
        principal = ui.people.login(name.strip(), secret)
    except AuthError as e:
        throttle.failed(who)
        return render(
            request, "login.html", None, status_code=401,
            next=safe_path(next), why=e.message, name=name,
        )  # fmt: skip
    throttle.passed(who)
    hours = ui.settings.ui_session_hours
    opened = ui.people.open_session(principal, timedelta(hours=hours))
    response = RedirectResponse(safe_path(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, opened.secret, max_age=int(hours * 3600), path="/",
        httponly=True, samesite="lax", secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


class Throttle:
    """Failed sign-ins per (address, name): past ``limit`` within ``window`` seconds, that pair
    waits until the oldest failure leaves the window (guessing passwords gets slow; each
    guess also costs the server a scrypt)."""

    def __init__(self, limit: int = 10, window: float = 300.0) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, who: tuple[str, str], now: float) -> list[float]:
        kept = [t for t in self._failures.get(who, []) if now - t < self.window]
        if kept:
            self._failures[who] = kept
        else:
            self._failures.pop(who, None)
        return kept

    def wait(self, who: tuple[str, str]) -> int:
        now = time.monotonic()
        with self._lock:
            recent = self._recent(who, now)
            if len(recent) < self.limit:
                return 0
            return max(1, int(self.window - (now - recent[0])) + 1)

    def failed(self, who: tuple[str, str]) -> None:
        now = time.monotonic()
        with self._lock:
            self._failures[who] = [*self._recent(who, now), now]
            if len(self._failures) > 100_000:  # a flood of names: forget the oldest half
                for key in list(self._failures)[: len(self._failures) // 2]:
                    self._failures.pop(key, None)

    def passed(self, who: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(who, None)


def _throttle(request: Request) -> Throttle:
    found = getattr(request.app.state, "login_throttle", None)
    if found is None:
        found = request.app.state.login_throttle = Throttle()
    return found


@router.post("/logout")
def logout(request: Request, who: Writer) -> Response:
    state(request).people.close_session(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login?why=signed_out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
