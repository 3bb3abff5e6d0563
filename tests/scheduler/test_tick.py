"""After the claims of a pass: a long after-tick hook does not let this scheduler's running
firing go stale (another scheduler would take it over and this one stop a healthy run), and
a pipeline without ``schedule:`` is retrained on drift, its retry after a restart running the
same `kiln run --trigger drift --alert ID`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from scheduler_support import WAIT, wait_for

from kiln.scheduler import Scheduler, _claims
from kiln.settings import Settings
from kiln.stores import MetadataStore

RETRAIN_ON_DRIFT = {"monitor": {"retrain": {"on": ["drift"], "cooldown": "1h"}}}


@pytest.fixture
def settings_for(db_url: str, tmp_path: Path, metadata: MetadataStore) -> Settings:
    return Settings(home=tmp_path / "home", db_url=db_url)


def _open_drift_alert(metadata: MetadataStore, pipeline: str, path: Path) -> Any:
    opened = datetime.now(UTC) - timedelta(minutes=10)
    with metadata.unit_of_work() as uow:
        uow.pipelines.upsert(pipeline, "tests@example.com", "", str(path))
        started = uow.alerts.start(
            pipeline, "drift:dep_delay", "drift", "alert", opened, 0.4, 0.25, "dep_delay drifts"
        )
        assert started is not None
        return uow.alerts.open(started.id, opened)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_hook_longer_than_the_stale_limit_keeps_the_running_firing_alive(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    settings_for: Settings,
    metadata: MetadataStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stale_after = timedelta(seconds=1)
    monkeypatch.setattr(_claims, "STALE_AFTER", stale_after)
    add_pipeline("kiln.yaml", "flights", schedule={"cron": "0 3 * * *", "catchup": "once"})
    loop = Scheduler(settings_for, pipelines, poll_seconds=1, retries=0)
    loop.heartbeat_seconds = 0.2
    seen: dict[str, Any] = {}

    def slow_hook(name: str) -> list[str]:
        with metadata.unit_of_work() as uow:
            mine = [f for f in uow.fires.running(name) if f.scheduler == loop.name]
        if not mine or "other" in seen:
            return []
        time.sleep(3 * stale_after.total_seconds())  # a long monitor pass
        other = Scheduler(settings_for, pipelines, retries=0)  # a second scheduler's pass
        seen["other"] = other.run_once()
        return ["monitored"]

    loop.after_tick = slow_hook
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:

        def ended() -> Any:
            with metadata.unit_of_work() as uow:
                fires = uow.fires.list("flights")
            return fires[0] if fires and fires[0].status != "running" else None

        fire = wait_for("the firing to end", ended)
    finally:
        loop.stop()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert "other" in seen and seen["other"].outcomes == []  # it took nothing over
    assert (fire.status, fire.attempt, fire.scheduler) == ("succeeded", 1, loop.name), fire.error


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_unscheduled_pipeline_is_retrained_on_drift(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    settings_for: Settings,
    metadata: MetadataStore,
) -> None:
    path = add_pipeline("kiln.yaml", "flights", **RETRAIN_ON_DRIFT)  # no schedule:
    alert = _open_drift_alert(metadata, "flights", path)

    summary = Scheduler(settings_for, pipelines, retries=0).run_once()
    assert summary.unscheduled == ["flights"]
    with metadata.read() as uow:
        [fire] = uow.fires.list("flights")
        [run] = uow.runs.list("flights")
    assert (fire.status, fire.trigger, fire.alert_id) == ("succeeded", "drift", alert.id)
    assert (run.trigger, run.alert_id, fire.run_id) == ("drift", alert.id, run.id)

    again = Scheduler(settings_for, pipelines, retries=0).run_once()  # decided once
    assert again.outcomes == []
    with metadata.read() as uow:
        assert len(uow.runs.list("flights")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_retraining_left_for_a_retry_is_retried_with_its_alert_after_a_restart(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    settings_for: Settings,
    metadata: MetadataStore,
) -> None:
    path = add_pipeline("kiln.yaml", "flights", **RETRAIN_ON_DRIFT)
    alert = _open_drift_alert(metadata, "flights", path)
    with metadata.unit_of_work() as uow:  # a scheduler that has since stopped claimed it
        fire = uow.fires.claim(
            "flights", alert.opened_at, str(path), "gone:1", trigger="drift", alert_id=alert.id
        )
        assert fire is not None
        uow.fires.finish(
            fire.id, "retrying", None, "interrupted", datetime.now(UTC), scheduler="gone:1"
        )

    Scheduler(settings_for, pipelines, retries=1).run_once()
    with metadata.read() as uow:
        retried = uow.fires.get(fire.id)
        [run] = uow.runs.list("flights")
    assert (retried.status, retried.attempt, retried.run_id) == ("succeeded", 2, run.id)
    assert (run.trigger, run.alert_id) == ("drift", alert.id)
