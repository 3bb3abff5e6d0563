"""The real `kiln scheduler` in child processes, over real pipelines, on every backend."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from scheduler_support import WAIT, start_scheduler, wait_for

from kiln.stores import MetadataStore

pytestmark = pytest.mark.slow

EVERY_MINUTE = {"schedule": {"cron": "* * * * *", "catchup": "once"}}


def same_minute_for_a_while() -> None:
    """Two firings of two different minutes are two legitimate firings, so schedulers that
    start on either side of a minute's turn may both run: start well inside a minute."""
    second = datetime.now(UTC).second
    if second >= 45:
        time.sleep(61 - second)


def test_two_schedulers_never_run_one_pipeline_twice(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    kiln_env: dict[str, str],
    metadata: MetadataStore,
    tmp_path: Path,
) -> None:
    add_pipeline("flights/kiln.yaml", "flights", **EVERY_MINUTE)
    same_minute_for_a_while()
    schedulers = [start_scheduler(kiln_env, tmp_path, pipelines, "--once") for _ in range(2)]
    outputs = [s.communicate(timeout=WAIT) for s in schedulers]
    logs = "".join(err for _, err in outputs)
    assert [s.returncode for s in schedulers] == [0, 0], logs

    with metadata.unit_of_work() as uow:
        fires = uow.fires.list("flights")
        runs = uow.runs.list("flights")
    assert len(fires) == 1, fires
    assert (fires[0].status, fires[0].attempt, fires[0].error) == ("succeeded", 1, None)
    assert [(r.id, r.status) for r in runs] == [(fires[0].run_id, "succeeded")]
    assert logs.count("started 'flights'") == 1 and logs.count("succeeded 'flights'") == 1
    assert "registered flights v1" in logs
    # only the scheduler that claimed the firing reports a run (its counts and its table)
    assert [("succeeded" in out) for out, _ in outputs].count(True) == 1, outputs
    assert "Traceback" not in logs


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_new_kiln_yaml_is_run_without_restart_next_to_a_broken_one(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    kiln_env: dict[str, str],
    metadata: MetadataStore,
    tmp_path: Path,
) -> None:
    broken = pipelines / "broken" / "kiln.yaml"
    broken.parent.mkdir()
    broken.write_text("name: broken\nowner: me\nschedule: {cron: '* * * * *', catchup: maybe}\n")
    log = tmp_path / "scheduler.log"
    with log.open("w") as stderr:  # a file, so that the test reads the log as it grows
        scheduler = start_scheduler(kiln_env, tmp_path, pipelines, "--poll", "1", log=stderr)
    try:
        wait_for("the broken file's error", lambda: f"{broken}:3:" in log.read_text())
        add_pipeline("flights/kiln.yaml", "flights", **EVERY_MINUTE)

        def succeeded() -> bool:
            with metadata.unit_of_work() as uow:
                return any(f.status == "succeeded" for f in uow.fires.list("flights"))

        wait_for("the new pipeline's run", succeeded)
        time.sleep(2)  # a few more polls: the broken file must not be reported again
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=WAIT)
    text = log.read_text()
    assert scheduler.returncode == 0, text
    assert text.count("refused: ") == 1 and "catchup: " in text and "'skip' or 'once'" in text
    assert "found pipeline 'flights'" in text and "stopping" in text
    with metadata.unit_of_work() as uow:
        runs = uow.runs.list("flights")
    assert runs and runs[-1].status == "succeeded"


# Three runs are slow: SQLite only; the retry claims are tested on PostgreSQL in test_fires.py.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_failing_pipeline_is_retried_with_backoff_then_fails(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    kiln_env: dict[str, str],
    metadata: MetadataStore,
    tmp_path: Path,
) -> None:
    add_pipeline(
        "broken-data/kiln.yaml", "flights", data={"query": "SELECT * FROM no_such_table"},
        resources={"cpus": 1}, **EVERY_MINUTE,
    )  # fmt: skip
    scheduler = start_scheduler(
        kiln_env, tmp_path, pipelines, "--once", "--retries", "2", "--retry-delay", "1"
    )
    out, logs = scheduler.communicate(timeout=WAIT)
    assert scheduler.returncode == 1, logs  # a firing failed
    assert "1 firing(s) failed: flights" in logs and "Traceback" not in logs

    with metadata.unit_of_work() as uow:
        fires = uow.fires.list("flights")
        runs = uow.runs.list("flights")
    assert len(fires) == 1
    fire = fires[0]
    assert (fire.status, fire.attempt, fire.next_retry_at) == ("failed", 3, None)
    assert fire.error and "exit code 3" in fire.error and "no_such_table" in fire.error
    assert [r.status for r in runs] == ["failed"] * 3 and fire.run_id == runs[0].id
    # exponential backoff: 1 s, then 2 s
    assert "attempt 1 (exit code 3: its data cannot be used); retry in 1s" in logs
    assert "attempt 2 (exit code 3: its data cannot be used); retry in 2s" in logs
    assert "attempt 3 (exit code 3: its data cannot be used); no retries left" in logs
    assert "failed" in out


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_blocked_version_is_an_outcome_of_its_firing_not_a_failure_to_retry(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    kiln_env: dict[str, str],
    metadata: MetadataStore,
    tmp_path: Path,
) -> None:
    add_pipeline(
        "blocked/kiln.yaml", "flights", resources={"cpus": 1}, **EVERY_MINUTE,
        deploy={"gates": {"data_quality": {"prediction_range": {"max": 0}}}},
    )  # fmt: skip
    scheduler = start_scheduler(
        kiln_env, tmp_path, pipelines, "--once", "--retries", "2", "--retry-delay", "1"
    )
    out, logs = scheduler.communicate(timeout=WAIT)
    assert scheduler.returncode == 10, logs  # like `kiln run`: CI can fail on it
    assert "Traceback" not in logs and "retry in" not in logs
    assert "blocked 'flights'" in logs and "(not retried)" in logs
    assert "1 version(s) registered but blocked by their gates: flights" in out

    with metadata.unit_of_work() as uow:
        fires = uow.fires.list("flights")
        runs = uow.runs.list("flights")
        versions = uow.versions.list("flights")
    assert [(f.status, f.attempt) for f in fires] == [("blocked", 1)]
    assert fires[0].error and "exit code 10" in fires[0].error
    assert "registered flights v1" in fires[0].error
    assert [r.status for r in runs] == ["succeeded"] and fires[0].run_id == runs[0].id
    assert [v.stage for v in versions] == ["blocked"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_once_with_the_default_catchup_prints_the_next_due_time_and_why_nothing_ran(
    add_pipeline: Callable[..., Path],
    pipelines: Path,
    kiln_env: dict[str, str],
    metadata: MetadataStore,
    tmp_path: Path,
) -> None:
    daily = {"cron": "30 3 * * *", "timezone": "America/New_York"}
    add_pipeline("daily/kiln.yaml", "flights", schedule=daily)
    scheduler = start_scheduler(kiln_env, tmp_path, pipelines, "--once")
    out, logs = scheduler.communicate(timeout=WAIT)
    assert scheduler.returncode == 0, logs
    assert "1 scheduled" in out
    row = next(line for line in out.splitlines() if "flights" in line and "America" in line)
    assert "03:30 America/New_York" in row
    assert ":30" in row.split("America/New_York")[1]  # the same time in UTC
    assert row.count("none") == 3  # ran, skipped, retrying
    assert "flights: not run: the firing due" in out and "`catchup: skip` (the default)" in out
    with metadata.unit_of_work() as uow:
        assert uow.fires.list("flights") == []
