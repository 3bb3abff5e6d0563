"""Server-rendered pages: one Jinja2 environment with autoescaping on (every name, reason and
description a user typed is shown escaped), and ``render`` that adds what every page shows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from kiln.ui._deps import CSRF_FIELD, Visitor

__all__ = ["TEMPLATES", "render"]

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
    pages), its CSRF token as ``csrf`` and the CSRF field name as ``csrf_field``."""
    page = {
        "who": who,
        "csrf": who.csrf_token if who is not None else None,
        "csrf_field": CSRF_FIELD,
        **context,
    }
    return TEMPLATES.TemplateResponse(request, template, page, status_code=status_code)
