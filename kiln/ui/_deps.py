"""Who is asking, per request: a bearer token (the API, the CLI) or a session cookie (a browser),
and the CSRF check of every write that a cookie authenticates.

A bearer token needs no CSRF token: a browser never sends one on its own. A cookie does: a
forged form on another site would carry it, so a write answered for a cookie must also carry the
session's CSRF token (the hidden form field ``csrf_token`` or the header ``X-CSRF-Token``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from kiln.errors import AuthError
from kiln.registry.people import People, Principal
from kiln.settings import Settings
from kiln.stores import Stores
from kiln.ui._cache import Recent

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "CsrfError",
    "UiState",
    "Viewer",
    "Visitor",
    "Writer",
    "check_csrf",
    "state",
    "visitor",
]

SESSION_COOKIE = "kiln_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class CsrfError(AuthError):
    """A write authenticated by a cookie without its session's CSRF token (a forged form)."""

    code = "csrf_failed"


@dataclass
class UiState:
    """What every request shares: the settings, the stores, the people service and the
    reports kept for the cost pages."""

    settings: Settings
    stores: Stores
    people: People
    recent: Recent
    """Reports kept and recomputed in the background (the cost pages)."""


def state(request: Request) -> UiState:
    found: UiState = request.app.state.kiln
    return found


@dataclass(frozen=True)
class Visitor:
    """A signed-in principal, with the CSRF token of its session (None for a bearer token)."""

    principal: Principal
    csrf_token: str | None

    @property
    def name(self) -> str:
        return self.principal.name


def visitor(request: Request) -> Visitor:
    """The principal of the request's bearer token or session cookie; AuthError (401, or a
    redirect to the login page for a page) when there is neither or it is not valid."""
    people = state(request).people
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError(
                "the Authorization header must be `Bearer TOKEN`",
                hint="send `Authorization: Bearer TOKEN` (`kiln tokens create USER` makes one)",
            )
        return Visitor(people.authenticate(token.strip()), None)
    principal, csrf = people.session(request.cookies.get(SESSION_COOKIE))
    return Visitor(principal, csrf)


def check_csrf(request: Request, who: Visitor, form_token: str | None) -> None:
    """Refuse a cookie-authenticated write whose CSRF token (form field or header) is missing or
    not the session's."""
    if who.csrf_token is None:
        return  # a bearer token: no ambient credential to forge
    presented = form_token or request.headers.get(CSRF_HEADER) or ""
    if not presented or not hmac.compare_digest(presented.encode(), who.csrf_token.encode()):
        raise CsrfError(
            "this form was refused: it does not carry this session's CSRF token",
            hint="reload the page and submit it again (a form from another site is refused)",
        )


async def _writer(request: Request, who: Annotated[Visitor, Depends(visitor)]) -> Visitor:
    """A visitor whose write passed the CSRF check (the form field, else the header)."""
    form_token: str | None = None
    if who.csrf_token is not None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        form_token = value if isinstance(value, str) else None
    check_csrf(request, who, form_token)
    return who


Viewer = Annotated[Visitor, Depends(visitor)]
"""Any signed-in principal (reads)."""
Writer = Annotated[Visitor, Depends(_writer)]
"""A signed-in principal whose request passed the CSRF check (writes; each action still checks
the principal's role and pipelines with ``kiln.registry.people.authorize``)."""


def settings_of(request: Request) -> Settings:
    return state(request).settings
