"""``X-Kiln-Event-Time``: when the request's event happened, as the caller says.

A pricing request is about a flight that leaves at a given time; the monitor's windows are over
that time (``coalesce(event_ts, ts)``), so traffic replayed or sent ahead lands in the window of
its event rather than of its arrival. The header is ISO 8601 with an offset or ``Z``
(``2013-07-01T14:00:00Z``, ``2013-07-01T10:00:00-04:00``): a time without an offset would be
read in whatever zone the server runs in, so it is refused (400) like any unparseable value.
A batch has one event time for all its rows. An event is never in the future: a time later
than when the header is read is recorded as that time, so ``event_ts <= ts`` always holds.
"""

from __future__ import annotations

from datetime import UTC, datetime

from kiln.serving._errors import ApiError

__all__ = ["HEADER", "parse_event_time"]

HEADER = "X-Kiln-Event-Time"
_MAX_BYTES = 64
_FORMAT = "ISO 8601 with an offset or Z, e.g. 2013-07-01T14:00:00Z or 2013-07-01T10:00:00-04:00"


def parse_event_time(raw: bytes | None) -> datetime | None:
    """The header's time in UTC (now, if it is later), None when it was not sent; ApiError 400
    when it does not parse or has no offset."""
    if raw is None:
        return None
    text = raw.decode("latin-1").strip()
    when: datetime | None = None
    if len(raw) <= _MAX_BYTES and text.isascii():
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            when = None
    if when is None or when.utcoffset() is None:
        shown = text if len(text) <= _MAX_BYTES else text[: _MAX_BYTES - 3] + "..."
        why = "has no UTC offset" if when is not None else "is not a time"
        raise ApiError(
            400,
            "invalid_event_time",
            f"header {HEADER}: {shown!r} {why}; expected {_FORMAT}",
            hint=f"send {HEADER} as {_FORMAT}, or leave it out (the event time is then the"
            " time the request is served)",
            fields=[{"field": f"(header {HEADER})", "problem": f"expected {_FORMAT}"}],
        )
    return min(when.astimezone(UTC), datetime.now(UTC))
