"""Retraining on drift: one claim per opened alert across racing schedulers, cooldown and
max_per_day decided in the database (SQLite and PostgreSQL), and a real retraining run started
by `kiln scheduler --once` on real flights, linked to its alert."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.config.monitor import RetrainConfig
from kiln.monitoring.monitor import align
from kiln.scheduler._retrain import claim_retrains
from kiln.settings import Settings
from kiln.stores import MetadataStore, Stores
from tests.monitoring.monitor_support import P, flights, production, serve

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
PATH = "/pipelines/kiln.yaml"


def _open_alert(store: MetadataStore, check: str, kind: str, at: datetime) -> Any:
    with store.unit_of_work() as uow:
        started = uow.alerts.start(P, check, kind, "alert", at, 0.4, 0.25, f"{check} drifts")
        assert started is not None
        return uow.alerts.open(started.id, at)


def _claim(store: MetadataStore, policy: RetrainConfig, now: datetime, name: str = "s1") -> list:
    with store.unit_of_work() as uow:
        return claim_retrains(uow, P, policy, PATH, name, now)


def test_one_retraining_per_alert_within_the_policy(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        uow.pipelines.upsert(P, "tests@example.com", "", PATH)
    policy = RetrainConfig(on=["drift"], cooldown="1h", max_per_day=2)
    assert _claim(store, RetrainConfig(), NOW) == []  # retrain.on empty: never
    first = _open_alert(store, "drift:temp:EWR", "drift", NOW - timedelta(minutes=10))
    _open_alert(store, "latency:p99", "latency", NOW - timedelta(minutes=10))  # not retrained

    (claim,) = _claim(store, policy, NOW)
    assert claim.alert.id == first.id and claim.fire is not None
    assert claim.fire.due_at == first.opened_at
    assert claim.fire.run_args() == ("--trigger", "drift", "--alert", str(first.id))
    assert _claim(store, policy, NOW) == []  # a run of the pipeline is in flight
    with store.unit_of_work() as uow:
        uow.fires.finish(claim.fire.id, "succeeded", scheduler="s1")
    assert _claim(store, policy, NOW + timedelta(minutes=5)) == []  # decided once

    second = _open_alert(store, "drift:temp:JFK", "drift", NOW + timedelta(minutes=10))
    (cooled,) = _claim(store, policy, NOW + timedelta(minutes=20))
    assert cooled.alert.id == second.id and cooled.fire is None
    assert "within monitor.retrain.cooldown (1h)" in (cooled.skipped or "")
    with store.read() as uow:  # a refusal is not recorded: the next pass decides again
        fires = {f.due_at: f.status for f in uow.fires.list()}
    assert fires == {first.opened_at: "succeeded"}
    (again,) = _claim(store, policy, NOW + timedelta(minutes=40))
    assert again.fire is None and again.alert.id == second.id

    # the alert stayed open: once the cooldown has passed it is retrained (2 per day)
    (ok,) = _claim(store, policy, NOW + timedelta(hours=1, minutes=1))
    assert ok.alert.id == second.id and ok.fire is not None
    assert ok.fire.run_args() == ("--trigger", "drift", "--alert", str(second.id))
    with store.unit_of_work() as uow:
        uow.fires.finish(ok.fire.id, "succeeded", scheduler="s1")
    _open_alert(store, "drift:visib:JFK", "drift", NOW + timedelta(hours=4))
    (refused,) = _claim(store, policy, NOW + timedelta(hours=4, minutes=1))
    assert refused.fire is None and "2 started today (UTC)" in (refused.skipped or "")
    (tomorrow,) = _claim(store, policy, NOW + timedelta(days=1))
    assert tomorrow.fire is not None and tomorrow.fire.due_at == NOW + timedelta(hours=4)


def test_a_retry_or_a_takeover_of_a_retraining_runs_the_same_command(
    store: MetadataStore,
) -> None:
    """The trigger and the alert are on the firing row, not in one scheduler's memory."""
    with store.unit_of_work() as uow:
        uow.pipelines.upsert(P, "tests@example.com", "", PATH)
    alert = _open_alert(store, "drift:temp:EWR", "drift", NOW - timedelta(minutes=10))
    (claim,) = _claim(store, RetrainConfig(on=["drift"]), NOW, "s1")
    assert claim.fire is not None
    command = ("--trigger", "drift", "--alert", str(alert.id))
    with store.unit_of_work() as uow:
        uow.fires.finish(claim.fire.id, "retrying", None, "failed", NOW, scheduler="s1")
        retried = uow.fires.claim_retry(claim.fire.id, 1, "s2", NOW)
        assert retried is not None
        taken = uow.fires.take_over_stale(retried.id, retried.heartbeat_at, "s3")
        assert taken is not None
        cron = uow.fires.claim(P, NOW + timedelta(days=1), PATH, "s1")
        assert cron is not None
    assert retried.run_args() == command and taken.run_args() == command
    assert cron.run_args() == ("--trigger", "schedule")


def test_schedulers_racing_start_one_retraining(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        uow.pipelines.upsert(P, "tests@example.com", "", PATH)
    _open_alert(store, "drift:temp:EWR", "drift", NOW - timedelta(hours=1))
    _open_alert(store, "drift:temp:JFK", "drift", NOW - timedelta(minutes=50))
    policy = RetrainConfig(on=["drift"], cooldown="1h")
    racers = 4
    barrier = threading.Barrier(racers)
    claimed: list[Any] = []
    errors: list[BaseException] = []

    def race(name: str) -> None:
        try:
            barrier.wait(30)
            claimed.extend(c for c in _claim(store, policy, NOW, name) if c.fire is not None)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=race, args=(f"s{i}",)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(claimed) == 1  # one firing for the first alert; the second waits for it


@pytest.mark.slow
def test_the_scheduler_retrains_on_drift(
    make_config, settings: Settings, stores: Stores, warehouse: Path, tmp_path: Path, cli
) -> None:
    loaded = make_config()
    version = production(settings, stores, loaded)
    day = timedelta(days=1)
    today = align(datetime.now(UTC), day)
    serve(settings, version, flights(warehouse, date(2013, 7, 1), date(2013, 7, 2)),
          shift=today - 3 * day - datetime(2013, 7, 1, tzinfo=UTC))  # fmt: skip
    folder = tmp_path / "pipelines"
    folder.mkdir()
    doc = yaml.safe_load(loaded.path.read_text())
    doc["data"]["query"] = "SELECT * FROM flights WHERE month IN (1, 2, 3)"  # newer data
    doc["schedule"] = {"cron": "0 3 1 1 *"}
    doc["monitor"] = {"window": "1d", "consecutive": 1, "retrain": {"on": ["drift"]}}
    (folder / "kiln.yaml").write_text(yaml.safe_dump(doc))

    home = ["--home", str(settings.home)]
    ran = cli(*home, "scheduler", "--dir", str(folder), "--once", cwd=tmp_path, timeout=600)
    assert ran.returncode == 0, ran.stderr
    assert "retraining with `kiln run --trigger drift`" in ran.stderr
    with stores.metadata.read() as uow:
        runs = [r for r in uow.runs.list(P) if r.trigger == "drift"]
        (run,) = runs
        alert = uow.alerts.get(run.alert_id)
        versions = {v.version: v for v in uow.versions.list(P)}
    assert run.status == "succeeded" and alert.kind == "drift" and alert.status == "open"
    assert run.model_version == 2 and versions[2].run_id == run.id
    with stores.metadata.read() as uow:  # it went through the gates like any version
        assert uow.gates.for_version(P, 2)
    shown = cli(*home, "runs", "show", run.id, cwd=tmp_path)
    assert f"drift by alert #{alert.id}" in shown.stdout

    again = cli(*home, "scheduler", "--dir", str(folder), "--once", cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    with stores.metadata.read() as uow:
        assert [r.id for r in uow.runs.list(P) if r.trigger == "drift"] == [run.id]


def test_kiln_run_trigger_and_alert_go_together(tmp_path: Path, cli) -> None:
    lone = cli("run", "kiln.yaml", "--trigger", "drift", cwd=tmp_path)
    assert lone.returncode == 2 and "--trigger drift|performance and --alert ID" in lone.stderr
    odd = cli("run", "kiln.yaml", "--trigger", "weather", cwd=tmp_path)
    assert odd.returncode == 2 and "'weather' is not one of manual, schedule" in odd.stderr
    manual = cli("run", "kiln.yaml", "--alert", "3", cwd=tmp_path)
    assert manual.returncode == 2 and "--alert" in manual.stderr
