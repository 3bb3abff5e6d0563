"""A run killed with SIGKILL leaves nothing half-registered; a second run of the same pipeline is
refused while the first holds the lock; the lock of a dead run is taken over; ``--resume``
retrains only the segments that did not finish. All through the real `kiln` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kiln.stores.metadata.store import UnitOfWork
from tests.process_tree import SLOW_TRAIN, RegistryPoll, tasks_succeeded, wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_kill_refuse_takeover_and_resume(make_config, cli, tmp_path: Path) -> None:
    (tmp_path / "slowtrain.py").write_text(textwrap.dedent(SLOW_TRAIN))
    loaded = make_config(model={"estimator": None, "params": None, "train": "slowtrain:train"})
    home = tmp_path / ".kiln"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILN_TEST_SLOW_SEGMENT": "LGA"}
    first = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "--home", str(home), "run", str(loaded.path)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        registry = RegistryPoll(home)
        wait_for(lambda: registry(tasks_succeeded(3)))
        stores = registry.stores
        assert stores is not None
        with stores.metadata.unit_of_work() as uow:
            [run_a] = uow.runs.list()
            before = {t.segment: t for t in uow.tasks.for_run(run_a.id)}
        assert set(before) == {"__fallback__", "EWR", "JFK"}  # LGA is sleeping

        # a second run of the same pipeline is refused while the first is alive
        second = cli("--home", str(home), "run", str(loaded.path), cwd=tmp_path)
        assert second.returncode == 7, second.stderr
        assert run_a.id in second.stderr and "Traceback" not in second.stderr

        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        with stores.metadata.unit_of_work() as uow:
            assert uow.runs.get(run_a.id).status == "running"  # killed: no chance to say so
            assert uow.versions.list() == []  # nothing half-registered

        # a new run takes over the dead run's lock and marks that run interrupted
        env_fast = {"KILN_TEST_SLOW_SEGMENT": ""}
        fresh = cli("--home", str(home), "run", str(loaded.path), cwd=tmp_path, env=env_fast)
        assert fresh.returncode == 0, fresh.stderr
        with stores.metadata.unit_of_work() as uow:
            assert uow.runs.get(run_a.id).status == "interrupted"
            assert [v.version for v in uow.versions.list()] == [1]

        # resuming the killed run retrains only LGA
        resumed = cli("--home", str(home), "run", "--resume", run_a.id, cwd=tmp_path, env=env_fast)
        assert resumed.returncode == 0, resumed.stderr
        assert "3 tasks reused" in resumed.stdout
        with stores.metadata.unit_of_work() as uow:
            run = uow.runs.get(run_a.id)
            after = {t.segment: t for t in uow.tasks.for_run(run_a.id)}
            version = uow.versions.for_run(run_a.id)
        assert run.status == "succeeded" and run.attempt == 2
        assert version is not None and version.version == 2
        assert set(after) == {"__fallback__", "EWR", "JFK", "LGA"}
        for seg in ("__fallback__", "EWR", "JFK"):
            assert after[seg].finished_at == before[seg].finished_at  # not retrained
            assert after[seg].attempt == 1
        assert after["LGA"].status == "succeeded"
        stores.close()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)


def test_sigterm_stops_the_run_promptly_and_marks_it_interrupted(
    make_config, cli, tmp_path: Path
) -> None:
    (tmp_path / "slowtrain.py").write_text(textwrap.dedent(SLOW_TRAIN))
    loaded = make_config(model={"estimator": None, "params": None, "train": "slowtrain:train"})
    home = tmp_path / ".kiln"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILN_TEST_SLOW_SEGMENT": "__fallback__"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "--home", str(home), "run", str(loaded.path)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        registry = RegistryPoll(home)
        # three segments done, the fallback sleeps for 300 s
        wait_for(lambda: registry(tasks_succeeded(3)))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - started < 30  # did not wait for the sleeping task
        assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
        stores = registry.stores
        assert stores is not None
        with stores.metadata.unit_of_work() as uow:
            [run] = uow.runs.list()
            assert run.status == "interrupted"
            assert uow.locks.get(run.pipeline) is None
        stores.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_sigterm_during_a_slow_query_marks_the_run_interrupted(make_config, tmp_path: Path) -> None:
    """DuckDB turns the KeyboardInterrupt of SIGTERM into its own 'Query interrupted' error: the
    run is still interrupted, not failed."""
    slow = (
        "SELECT * FROM flights WHERE (SELECT count(*) FROM flights a, flights b"
        " WHERE a.flight_id < 20000 AND a.dest = b.dest) > 0"
    )
    loaded = make_config(data={"query": slow})
    home = tmp_path / ".kiln"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "--home", str(home), "run", str(loaded.path)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    registry = RegistryPoll(home)
    try:

        def extracting(uow: UnitOfWork) -> bool:
            runs = uow.runs.list()
            steps = uow.steps.for_run(runs[0].id) if runs else []
            return [s.name for s in steps] == ["extract"]

        wait_for(lambda: registry(extracting))
        time.sleep(0.5)  # inside the query
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        stores = registry.stores
        assert stores is not None
        with stores.metadata.unit_of_work() as uow:
            [run] = uow.runs.list()
        assert run.status == "interrupted", run.error
    finally:
        registry.close()
        if proc.poll() is None:
            proc.kill()
