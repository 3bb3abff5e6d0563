"""Fault suite: kill -9 of a real `kiln run` at each step boundary, then `kiln run --resume`.

The test stops the run exactly at a boundary without any hook in Kiln: it polls the metadata
database every 50 ms inside a write transaction of its own (``BEGIN IMMEDIATE``); when the
step it waits for is recorded finished, it SIGKILLs the run's process group while still
holding the write lock, so the run cannot have recorded anything of its next step.

Whatever the boundary, the resume must end with one version, gated (its results stored) and
released, its artifacts matching their digests, and the run succeeded with every step recorded.
A run killed between registering and releasing is also what `kiln status` must flag, `kiln runs
list` must show interrupted, and `kiln watch` must gate.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln.registry.package import load_package
from kiln.settings import Settings
from kiln.stores import open_stores

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.fault, pytest.mark.slow]

# January only, 5 trees: each run takes a few seconds of training.
SMALL = {
    "data": {"query": "SELECT * FROM flights WHERE month = 1"},
    "evaluation": {"split": {"holdout_start": "2013-01-22"}},
    "model": {"params": {"n_estimators": 5, "num_leaves": 7}},
}
BOUNDARIES = ["extract", "check", "train", "package", "register"]


def start_run(config: Path, home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "--home", str(home), "run", str(config)],
        cwd=config.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def kill_after(proc: subprocess.Popen[bytes], home: Path, step: str, timeout: float = 240) -> None:
    """SIGKILL ``proc``'s process group as soon as the database shows ``step`` succeeded.

    The read (every 5 ms) does not stop the run (WAL), so the run may have gone on by then;
    from the read on, the test holds the database's write lock until the run is dead, so the
    state the test reads afterwards is the one the run was killed in."""
    db = home / "kiln.db"
    deadline = time.monotonic() + timeout
    while not db.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "kiln run never started"
        time.sleep(0.02)
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"kiln run exited {proc.returncode} before {step} finished")
            try:
                row = con.execute("SELECT status FROM steps WHERE name = ?", (step,)).fetchone()
            except sqlite3.OperationalError:  # the schema is not there yet
                row = None
            if row is not None and row[0] == "succeeded":
                con.execute("BEGIN IMMEDIATE")  # the run can record nothing more
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                con.execute("ROLLBACK")
                return
            time.sleep(0.005)
    finally:
        con.close()
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"timed out waiting for step {step}")


def steps_of(home: Path, run_id: str) -> dict[str, str]:
    stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.unit_of_work() as uow:
            return {s.name: s.status for s in uow.steps.for_run(run_id)}
    finally:
        stores.close()


def the_run(home: Path) -> str:
    stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.unit_of_work() as uow:
            [run] = uow.runs.list()
            return run.id
    finally:
        stores.close()


def assert_released_once(home: Path, run_id: str) -> None:
    """One version, gated and released, its artifacts verified; the run succeeded."""
    stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.unit_of_work() as uow:
            versions = uow.versions.list()
            run = uow.runs.get(run_id)
            steps = {s.name: s for s in uow.steps.for_run(run_id)}
            gates = uow.gates.history("flights-test", 1)
        assert [(v.version, v.run_id) for v in versions] == [(1, run_id)]
        assert gates, "the version was never gated"
        assert {g.trigger for g in gates} <= {"run", "watch"}
        assert run.status == "succeeded" and run.model_version == 1
        assert [name for name in BOUNDARIES if steps[name].status != "succeeded"] == []
        assert steps["release"].status == "succeeded", steps["release"]
        assert steps["release"].details["outcome"] in ("ready", "promoted", "blocked")
        loaded = load_package(stores.content, versions[0].manifest_digest, label="v1")
        assert loaded.manifest["models"]  # every artifact matched its SHA-256 while loading
    finally:
        stores.close()


def killed_at(boundary: str, make_config) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
    """A run killed right after ``boundary``: at most its next step started. The poll can miss
    a short next step (register takes milliseconds): then the attempt starts over, at most 3."""
    order = [*BOUNDARIES, "release"]
    following = order[order.index(boundary) + 1]
    for attempt in range(3):
        loaded = make_config(name=f"kiln-{attempt}.yaml", **SMALL)
        home = loaded.path.parent / f".kiln-{attempt}"
        kill_after(start_run(loaded.path, home), home, boundary)
        run_id = the_run(home)
        steps = steps_of(home, run_id)
        assert steps[boundary] == "succeeded"
        if steps.get(following) in (None, "running"):
            return home, run_id
    raise AssertionError(f"3 attempts were killed after {following} finished, not before")


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_kill_at_a_step_boundary_then_resume(boundary: str, make_config, cli) -> None:
    home, run_id = killed_at(boundary, make_config)
    resumed = cli("--home", str(home), "run", "--resume", run_id, cwd=home.parent)
    assert resumed.returncode in (0, 10), resumed.stdout + resumed.stderr
    assert "registered" in resumed.stdout and "gates of flights-test v1" in resumed.stdout
    assert_released_once(home, run_id)


def test_a_run_killed_before_releasing_is_flagged_and_gated_by_watch(make_config, cli) -> None:
    home, run_id = killed_at("register", make_config)
    cwd = home.parent

    runs = cli("--home", str(home), "runs", "list", cwd=cwd)
    assert runs.returncode == 0, runs.stderr
    assert "interrupted" in runs.stdout and "running" not in runs.stdout, runs.stdout
    status = cli("--home", str(home), "status", cwd=cwd)
    assert status.returncode == 0, status.stderr
    text = " ".join(status.stdout.split())
    assert "v1 candidate, never gated" in text or "v1 candidate, gated but never" in text, text
    assert f"run `kiln run --resume {run_id}` or `kiln gates check flights-test 1`" in text

    watch = cli("--home", str(home), "watch", "--once", cwd=cwd)
    assert watch.returncode == 0, watch.stderr
    assert "nothing to do" not in watch.stdout
    assert f"gated after its run {run_id} died before releasing it" in watch.stdout
    assert_released_once(home, run_id)

    status = cli("--home", str(home), "status", cwd=cwd)
    assert "never gated" not in status.stdout, status.stdout
    again = cli("--home", str(home), "run", "--resume", run_id, cwd=cwd)
    assert again.returncode == 2 and "already succeeded" in again.stderr, again.stderr


def test_the_watch_pass_returns_a_typed_event_for_a_version_it_released(make_config) -> None:
    """What `kiln watch` prints about a version a dead run left ungated is the message of a
    typed event that names the run, the outcome and its gates."""
    from kiln.release.controller import Release
    from kiln.release.events import EventKind

    home, run_id = killed_at("register", make_config)
    settings = Settings(home=home)
    stores = open_stores(settings)
    try:
        [event] = Release(settings, stores).tick("flights-test")
    finally:
        stores.close()
    assert (event.kind, event.pipeline, event.version) == (
        EventKind.RELEASED_UNGATED, "flights-test", 1,
    )  # fmt: skip
    assert event.details["run_id"] == run_id and event.details["gates"], event
    outcome = event.details["outcome"]
    assert event.message.startswith(
        f"flights-test v1 {outcome}: gated after its run {run_id} died before releasing it: "
    )
    assert_released_once(home, run_id)
