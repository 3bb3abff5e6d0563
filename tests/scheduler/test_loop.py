"""The scheduler loop in this process (a fixed clock where it matters), on every backend:
skipped firings, takeover from a dead scheduler, the after-tick hook, and stopping."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from scheduler_support import WAIT, wait_for

from kiln.release.events import EventKind, ReleaseEvent
from kiln.scheduler import Scheduler
from kiln.settings import Settings
from kiln.stores import MetadataStore
from kiln.stores.metadata import tables as t

HOURLY_SKIP = {"schedule": {"cron": "0 * * * *", "catchup": "skip"}}
NOW = datetime(2024, 1, 2, 10, 20, tzinfo=UTC)


@pytest.fixture
def settings_for(db_url: str, tmp_path: Path, metadata: MetadataStore) -> Settings:
    return Settings(home=tmp_path / "home", db_url=db_url)


def scheduler(settings: Settings, folder: Path, **options: object) -> Scheduler:
    return Scheduler(settings, folder, clock=lambda: NOW, **options)  # type: ignore[arg-type]


def test_a_missed_firing_under_catchup_skip_is_recorded_as_skipped(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    settings_for: Settings,
    metadata: MetadataStore,
) -> None:
    path = add_pipeline("kiln.yaml", "flights", **HOURLY_SKIP)
    with metadata.unit_of_work() as uow:  # it last ran at 03:00; the scheduler was down since
        fire = uow.fires.claim("flights", NOW.replace(hour=3, minute=0), str(path), "old:1")
        assert fire is not None
        uow.fires.finish(fire.id, "succeeded")

    summary = scheduler(settings_for, pipelines).run_once()
    assert summary.scheduled == ["flights"]
    [skipped] = summary.outcomes
    assert (skipped.status, skipped.due_at) == ("skipped", NOW.replace(minute=0))
    with metadata.unit_of_work() as uow:
        fires = uow.fires.list("flights")
    assert [(f.due_at.hour, f.status) for f in fires] == [(10, "skipped"), (3, "succeeded")]
    assert fires[0].error and "1200s late" in fires[0].error

    again = scheduler(settings_for, pipelines).run_once()  # a second scheduler: nothing to do
    assert again.outcomes == []
    [first] = summary.pipelines
    assert first.skipped == (NOW.replace(minute=0),) and first.ran == () and first.not_run is None
    assert first.next_due == NOW.replace(hour=11, minute=0)


def test_a_first_pass_under_the_default_catchup_says_why_nothing_ran_and_when_it_will(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    settings_for: Settings,
    metadata: MetadataStore,
) -> None:
    add_pipeline("kiln.yaml", "flights", schedule={"cron": "0 3 * * *", "timezone": "Europe/Paris"})
    summary = scheduler(settings_for, pipelines).run_once()
    assert summary.outcomes == []
    [first] = summary.pipelines
    assert first.ran == () and first.skipped == () and first.retrying == ()
    assert first.not_run == datetime(2024, 1, 2, 2, 0, tzinfo=UTC)  # 03:00 in Paris, today
    assert first.next_due == datetime(2024, 1, 3, 2, 0, tzinfo=UTC)
    assert (first.next_local.hour, first.timezone) == (3, "Europe/Paris")


def test_a_firing_of_a_dead_scheduler_is_taken_over_as_a_failed_attempt(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    settings_for: Settings,
    metadata: MetadataStore,
) -> None:
    path = add_pipeline("kiln.yaml", "flights", **HOURLY_SKIP)
    with metadata.unit_of_work() as uow:
        fire = uow.fires.claim("flights", NOW.replace(minute=0), str(path), "gone:42")
    assert fire is not None
    silent_since = datetime.now(UTC) - timedelta(minutes=3)
    with metadata.engine.begin() as conn:  # its scheduler died three minutes ago
        conn.execute(sa.update(t.ScheduleFire).values(heartbeat_at=silent_since))

    scheduler(settings_for, pipelines, retries=0).run_once()
    with metadata.unit_of_work() as uow:
        taken = uow.fires.get(fire.id)
    assert (taken.status, taken.attempt) == ("failed", 1) and taken.scheduler != "gone:42"
    assert taken.error and "scheduler gone:42 stopped heartbeating" in taken.error


def test_after_tick_runs_for_every_pipeline_and_its_errors_are_logged(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    settings_for: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_pipeline("a/kiln.yaml", "alpha", **HOURLY_SKIP)
    add_pipeline("b/kiln.yaml", "beta", **HOURLY_SKIP)
    add_pipeline("c/kiln.yaml", "gamma")  # unscheduled: monitored (and retrained) too
    ticked: list[str] = []

    def tick(name: str) -> list[str]:
        ticked.append(name)
        if name == "alpha":
            raise RuntimeError("release controller bug")
        return [f"promoted {name} v2"]

    with caplog.at_level(logging.INFO, logger="kiln.scheduler"):
        summary = scheduler(settings_for, pipelines, after_tick=tick).run_once()
    assert ticked == ["alpha", "beta", "gamma"] and summary.unscheduled == ["gamma"]
    assert "after-tick of pipeline 'alpha' failed" in caplog.text
    assert "release controller bug" in caplog.text and "beta: promoted beta v2" in caplog.text


def test_after_tick_logs_the_message_of_each_release_event(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    settings_for: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The release controller's watch pass returns typed events; the scheduler logs each
    event's message, the line `kiln watch` prints."""
    add_pipeline("a/kiln.yaml", "alpha", **HOURLY_SKIP)
    line = "alpha: rolled back v3 -> v2: error rate 40.0% over 50 requests (at most 5.0%)"

    def tick(name: str) -> list[ReleaseEvent]:
        return [ReleaseEvent(name, 3, EventKind.ROLLED_BACK, line, NOW, {"to_version": 2})]

    with caplog.at_level(logging.INFO, logger="kiln.scheduler"):
        scheduler(settings_for, pipelines, after_tick=tick).run_once()
    assert f"alpha: {line}" in caplog.messages, caplog.messages
    assert "ReleaseEvent(" not in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_stopping_stops_the_run_in_flight_and_leaves_its_firing_for_a_retry(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    settings_for: Settings,
    metadata: MetadataStore,
) -> None:
    add_pipeline("kiln.yaml", "flights", schedule={"cron": "0 3 * * *", "catchup": "once"})
    loop = Scheduler(settings_for, pipelines, poll_seconds=1)
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:

        def run_in_flight() -> bool:
            with metadata.unit_of_work() as uow:
                return any(r.status == "running" for r in uow.runs.list("flights"))

        wait_for("the run to start", run_in_flight)
    finally:
        loop.stop()
        thread.join(WAIT)
    assert not thread.is_alive()
    with metadata.unit_of_work() as uow:
        [fire] = uow.fires.list("flights")
        [run] = uow.runs.list("flights")
    assert (fire.status, fire.attempt, fire.next_retry_at is not None) == ("retrying", 1, True)
    assert fire.error and "interrupted" in fire.error and fire.run_id == run.id
    assert run.status == "interrupted", run.error
