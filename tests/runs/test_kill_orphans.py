"""kill -9 of a real `kiln run` mid-training leaves no process behind: the pool workers (the
one inside a task and the idle ones), the forkserver and multiprocessing's resource tracker
all exit within seconds, with nothing half-written in the artifact store. Linux only (/proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.process_tree import (
    HAS_PROC,
    SLOW_TRAIN,
    RegistryPoll,
    descendants,
    kill_all,
    survivors,
    tasks_succeeded,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.fault,
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_PROC, reason="reads the process tree in /proc"),
]

ORPHAN_BOUND_S = 15.0
"""The workers notice the death of the run at once (pidfd); 15 s leaves room for a busy CI."""


def test_kill_9_of_a_run_mid_training_leaves_no_process(make_config, tmp_path: Path) -> None:
    (tmp_path / "slowtrain.py").write_text(textwrap.dedent(SLOW_TRAIN))
    loaded = make_config(model={"estimator": None, "params": None, "train": "slowtrain:train"})
    home = tmp_path / ".kiln"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILN_TEST_SLOW_SEGMENT": "LGA"}
    run = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "--home", str(home), "run", str(loaded.path)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    recorded: dict[int, int] = {}
    registry = RegistryPoll(home)
    try:
        # LGA sleeps inside a worker, the other workers are idle
        wait_for(lambda: registry(tasks_succeeded(3)))
        recorded = descendants(run.pid)
        names = " | ".join(survivors(recorded).values())
        print(names)
        assert "forkserver" in names and "resource_tracker" in names, names
        assert len(recorded) >= 3, names  # tracker, forkserver, at least one worker

        os.kill(run.pid, signal.SIGKILL)  # the run only, not its process group
        killed_at = time.monotonic()
        run.wait(timeout=30)
        deadline = time.monotonic() + ORPHAN_BOUND_S
        while survivors(recorded) and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"{len(recorded)} processes, gone {time.monotonic() - killed_at:.1f} s after")
        assert survivors(recorded) == {}, f"left behind: {survivors(recorded)}"

        leftovers = [p for p in (home / "artifacts").rglob("*") if p.is_file()]
        assert not [p for p in leftovers if ".kiln-tmp-" in p.name]  # nothing half-written
    finally:
        registry.close()
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        kill_all(recorded)
