"""Server-rendered pages: one Jinja2 environment with autoescaping on (every name, reason and
description a user typed is shown escaped), and ``render`` that adds what every page shows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from kiln.ui._deps import CSRF_FIELD, Visitor

__all__ = ["FLASH_COOKIE", "TEMPLATES", "redirect_with_flash", "render", "safe_path"]

FLASH_COOKIE = "kiln_flash"

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
_env = TEMPLATES.env
_env.autoescape = True
_env.trim_blocks = True
_env.lstrip_blocks = True


def _ago(value: datetime | None, now: datetime | None = None) -> str:
    """``3 d``, ``5 h``, ``12 min``, ``40 s`` ago (``-`` for None)."""
    if value is None:
        return "-"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"${value:.4f}"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


_env.filters.update(ago=_ago, when=_when, usd=_usd, num=_num)


def render(
    request: Request,
    template: str,
    who: Visitor | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with ``who`` (the signed-in visitor, None on the login and error
    pages), its CSRF token as ``csrf``, the CSRF field name as ``csrf_field``, and the message
    of the action that redirected here (``flash``, ``flash_kind``: ``ok`` or ``error``)."""
    flash = request.cookies.get(FLASH_COOKIE)
    kind, _, message = (flash or "").partition(":")
    page = {
        "who": who,
        "csrf": who.csrf_token if who is not None else None,
        "csrf_field": CSRF_FIELD,
        "flash": message or None,
        "flash_kind": kind or None,
        **context,
    }
    response = TEMPLATES.TemplateResponse(request, template, page, status_code=status_code)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def safe_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path of this site (no ``//host``, no scheme, no backslash),
    ``default`` otherwise: a redirect to it is never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def redirect_with_flash(url: str, message: str, kind: str = "ok") -> RedirectResponse:
    """Redirect (303, after a form's POST) to ``url``, whose page shows ``message`` once (a
    short-lived HttpOnly cookie, so that a link cannot make a page say anything)."""
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        FLASH_COOKIE, f"{kind}:{message[:1500]}", max_age=60, path="/",
        httponly=True, samesite="lax",
    )  # fmt: skip
    return response
