"""Errors the server answers with: a status code and a body that names the field and the fix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from kiln.errors import AuthError, KilnError, NotFoundError, StoreError

__all__ = ["ApiError", "error_body", "status_of", "unauthorized"]

JSON = b"application/json"


class ApiError(KilnError):
    """A request the server refuses: ``status`` is the HTTP status, ``fields`` the bad fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        fields: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.fields = list(fields)
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.fields:
            out["fields"] = self.fields
        return out


def status_of(error: KilnError) -> int:
    """The HTTP status of a Kiln error raised below the server (stages, stores)."""
    if isinstance(error, ApiError):
        return error.status
    if isinstance(error, AuthError):
        return 401
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, StoreError):
        return 503
    if error.code == "stage_refused":
        return 409
    return 400


def error_body(error: KilnError) -> bytes:
    return orjson.dumps({"error": error.to_dict()})


def unauthorized(message: str, hint: str) -> ApiError:
    return ApiError(
        401, "not_authorized", message, hint=hint, headers={"www-authenticate": "Bearer"}
    )
