"""Request ids: the client's ``X-Request-ID`` when it is valid, else a generated one."""

from __future__ import annotations

import itertools
import re
import uuid

__all__ = ["REQUEST_ID", "RequestIds"]

REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")
"""A client request id Kiln keeps: 1-128 printable ASCII characters without spaces."""


class RequestIds:
    """Unique ids without a uuid4 per request: a random prefix per process, then a counter."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._next = itertools.count(1).__next__

    def __call__(self, given: bytes | None) -> tuple[str, bytes | None]:
        """The request's id, and why the client's ``X-Request-ID`` was replaced (or None)."""
        if given is not None and REQUEST_ID.fullmatch(given):
            return given.decode("ascii"), None
        generated = f"{self._prefix}{self._next():08x}"
        return generated, None if given is None else _why_replaced(given)


def _why_replaced(given: bytes) -> bytes:
    """The value of ``X-Kiln-Request-ID-Replaced``: why the client's id was not used."""
    if not given:
        return b"empty"
    if len(given) > 128:
        return b"longer than 128 characters"
    return b"not printable ASCII without spaces"
