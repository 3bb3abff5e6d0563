"""When a pipeline is due: pure functions of its schedule, the time now and its firing history.

Cron times are computed in the schedule's time zone and returned in UTC (the firings' key).
Across a daylight-saving change they follow cron: a time in the hour that is skipped in spring
fires at the first minute after the gap, and a time of a fixed hour that occurs twice in autumn
fires once (the first time); a schedule with ``*`` in the hour field runs on real time and
fires on both passes of the repeated hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from kiln.config.models import ScheduleConfig

__all__ = ["Due", "decide", "grace_for", "latest_due", "next_due"]

_MIN_GRACE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Due:
    """What to do about a pipeline now: claim the firing due at ``fire``, record the missed
    firing due at ``skip`` as skipped, or neither; ``next_at`` is the next cron time."""

    fire: datetime | None
    skip: datetime | None
    next_at: datetime


def grace_for(poll_seconds: float) -> timedelta:
    """How late a firing may start under ``catchup: skip``: two polls, and at least a minute."""
    return max(timedelta(seconds=2 * poll_seconds), _MIN_GRACE)


def latest_due(schedule: ScheduleConfig, now: datetime) -> datetime:
    """The latest cron time at or before ``now``, in UTC."""
    # croniter's previous time excludes a start that is exactly on a cron time unless it has
    # a fraction of a second: start one microsecond into the current second.
    start = now.replace(microsecond=0) + timedelta(microseconds=1)
    return next(_times(schedule, start, forward=False))


def next_due(schedule: ScheduleConfig, now: datetime) -> datetime:
    """The first cron time strictly after ``now``, in UTC."""
    return next(_times(schedule, now, forward=True))


def decide(
    schedule: ScheduleConfig,
    *,
    now: datetime,
    last_due: datetime | None,
    first_seen: datetime,
    grace: timedelta,
) -> Due:
    """Decide what a scheduler does about one pipeline now.

    ``last_due`` is the due time of the pipeline's latest firing in the database (any status),
    ``first_seen`` when this scheduler first saw the pipeline's config.

    - Never fired, ``catchup: once``: fire for the latest cron time at or before now.
    - Never fired, ``catchup: skip``: wait for the first cron time after ``first_seen``.
    - Cron times passed since the last firing: ``once`` fires one firing for the latest of
      them; ``skip`` fires it if it is at most ``grace`` old, else records it as skipped.
    """
    _check_aware("now", now)
    _check_aware("first_seen", first_seen)
    latest = latest_due(schedule, now)
    upcoming = next_due(schedule, now)
    if last_due is None and schedule.catchup == "once":
        return Due(fire=latest, skip=None, next_at=upcoming)
    since = last_due if last_due is not None else first_seen
    _check_aware("last_due", since)
    if latest <= since:
        return Due(fire=None, skip=None, next_at=upcoming)
    if schedule.catchup == "once" or now - latest <= grace:
        return Due(fire=latest, skip=None, next_at=upcoming)
    return Due(fire=None, skip=latest, next_at=upcoming)


def _times(schedule: ScheduleConfig, start: datetime, *, forward: bool) -> Iterator[datetime]:
    zone = ZoneInfo(schedule.timezone)
    fixed_hour = schedule.cron.split()[1] != "*"
    times = croniter(schedule.cron, start.astimezone(zone))
    while True:
        moment: datetime = times.get_next(datetime) if forward else times.get_prev(datetime)
        if fixed_hour and _second_pass(moment):
            continue
        yield moment.astimezone(UTC)


def _second_pass(moment: datetime) -> bool:
    """Whether ``moment`` is the second occurrence of its wall-clock time (autumn's repeated
    hour): the same wall-clock time read as its first occurrence is an earlier instant."""
    first = moment.replace(fold=0)
    return first.astimezone(UTC) < moment.astimezone(UTC)


def _check_aware(field: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} must be a timezone-aware datetime, got naive {value!r}")
