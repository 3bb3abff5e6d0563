"""When a pipeline is due: catch-up policies and daylight-saving changes, at fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kiln.config.models import ScheduleConfig
from kiln.scheduler import Due, decide, grace_for, latest_due, next_due

GRACE = timedelta(seconds=60)


def at(text: str) -> datetime:
    """A UTC time written as 'YYYY-MM-DD HH:MM[:SS]'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def every(cron: str, catchup: str = "skip", timezone: str = "UTC") -> ScheduleConfig:
    return ScheduleConfig(cron=cron, catchup=catchup, timezone=timezone)  # type: ignore[arg-type]


def due(schedule: ScheduleConfig, now: str, last: str | None, seen: str | None = None) -> Due:
    return decide(
        schedule,
        now=at(now),
        last_due=at(last) if last else None,
        first_seen=at(seen or now),
        grace=GRACE,
    )


def test_grace_is_two_polls_and_at_least_a_minute() -> None:
    assert grace_for(10) == timedelta(seconds=60)
    assert grace_for(45) == timedelta(seconds=90)


def test_a_cron_time_is_due_from_its_own_second() -> None:
    daily = every("0 3 * * *")
    assert latest_due(daily, at("2024-01-02 03:00")) == at("2024-01-02 03:00")
    assert latest_due(daily, at("2024-01-02 02:59:59")) == at("2024-01-01 03:00")
    assert next_due(daily, at("2024-01-02 03:00")) == at("2024-01-03 03:00")


def test_first_sight_with_catchup_once_fires_the_latest_time_now() -> None:
    d = due(every("0 3 * * *", "once"), now="2024-01-02 10:00", last=None)
    assert d == Due(fire=at("2024-01-02 03:00"), skip=None, next_at=at("2024-01-03 03:00"))


def test_first_sight_with_catchup_skip_waits_for_the_next_time() -> None:
    hourly = every("0 * * * *")
    assert due(hourly, now="2024-01-02 10:30", last=None) == Due(None, None, at("2024-01-02 11:00"))
    # the next time comes while the scheduler watches: it fires
    d = due(hourly, now="2024-01-02 11:00:05", last=None, seen="2024-01-02 10:30")
    assert d.fire == at("2024-01-02 11:00") and d.skip is None


def test_nothing_is_due_between_cron_times() -> None:
    d = due(every("0 * * * *", "once"), now="2024-01-02 10:59", last="2024-01-02 10:00")
    assert d == Due(None, None, at("2024-01-02 11:00"))


def test_missed_times_with_catchup_once_fire_once_for_the_latest() -> None:
    # down from 03:00 to 10:20: seven hourly times were missed, one firing runs
    d = due(every("0 * * * *", "once"), now="2024-01-02 10:20", last="2024-01-02 03:00")
    assert d == Due(fire=at("2024-01-02 10:00"), skip=None, next_at=at("2024-01-02 11:00"))


def test_missed_times_with_catchup_skip_fire_within_the_grace_else_are_skipped() -> None:
    hourly = every("0 * * * *", "skip")
    on_time = due(hourly, now="2024-01-02 10:00:40", last="2024-01-02 09:00")
    assert on_time.fire == at("2024-01-02 10:00") and on_time.skip is None
    late = due(hourly, now="2024-01-02 10:20", last="2024-01-02 03:00")
    assert late == Due(fire=None, skip=at("2024-01-02 10:00"), next_at=at("2024-01-02 11:00"))
    # once the skipped firing is recorded, it is the last due time: nothing more until 11:00
    assert due(hourly, now="2024-01-02 10:20", last="2024-01-02 10:00").fire is None


def test_daily_time_in_the_spring_gap_fires_once_right_after_it() -> None:
    # Europe/Paris, 2024-03-31: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist
    paris = every("30 2 * * *", "skip", "Europe/Paris")
    assert next_due(paris, at("2024-03-30 12:00")) == at("2024-03-31 01:00")  # 03:00 CEST
    assert next_due(paris, at("2024-03-31 01:00")) == at("2024-04-01 00:30")  # 02:30 CEST
    d = due(paris, now="2024-03-31 01:00:10", last="2024-03-30 01:30")
    assert d.fire == at("2024-03-31 01:00")


def test_daily_time_in_the_repeated_autumn_hour_fires_once() -> None:
    # Europe/Paris, 2024-10-27: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice
    paris = every("30 2 * * *", "once", "Europe/Paris")
    first = at("2024-10-27 00:30")  # 02:30 CEST
    assert next_due(paris, at("2024-10-26 12:00")) == first
    assert next_due(paris, first) == at("2024-10-28 01:30")  # not 02:30 CET the same night
    assert latest_due(paris, at("2024-10-27 01:45")) == first  # 02:45 CET
    assert due(paris, now="2024-10-27 01:45", last="2024-10-27 00:30").fire is None


def test_a_schedule_on_every_hour_follows_real_time_across_the_repeated_hour() -> None:
    paris = every("*/30 * * * *", "skip", "Europe/Paris")
    times, moment = [], at("2024-10-26 23:45")
    for _ in range(5):
        moment = next_due(paris, moment)
        times.append(moment)
    assert times == [at("2024-10-27 00:00"), at("2024-10-27 00:30"), at("2024-10-27 01:00"),
                     at("2024-10-27 01:30"), at("2024-10-27 02:00")]  # fmt: skip


def test_new_york_daily_time_keeps_local_time_across_the_change() -> None:
    ny = every("0 9 * * *", "skip", "America/New_York")
    assert next_due(ny, at("2024-03-09 15:00")) == at("2024-03-10 13:00")  # 09:00 EDT
    assert next_due(ny, at("2024-03-08 15:00")) == at("2024-03-09 14:00")  # 09:00 EST


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(
            every("0 3 * * *"),
            now=datetime(2024, 1, 1),
            last_due=None,
            first_seen=at("2024-01-01 00:00"),
            grace=GRACE,
        )
