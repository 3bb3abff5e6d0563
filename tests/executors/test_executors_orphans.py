"""Local workers exit when the process that owns the executor dies, kill -9 included; the fork
server and the resource tracker follow. The end-to-end version (a real `kiln run`) is in
tests/runs/test_kill_orphans.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kiln.executors._watchdog import wait_for_exit
from tests.process_tree import HAS_PROC, descendants, kill_all, survivors

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

ORPHAN_BOUND_S = 15.0
"""Measured well under a second; the margin is for a loaded CI machine."""

OWNER = """
import sys

import executor_tasks as tasks
from kiln.executors import make_executor

executor = make_executor("local", workers=2)
outcomes = executor.map(tasks.sleep_then_return, [("long", 300.0), ("short", 0.0)])
print(next(outcomes).key, flush=True)  # one worker idle, the other inside a 300 s task
sys.stdin.read()
"""


@pytest.mark.fault
@pytest.mark.skipif(not HAS_PROC, reason="reads the process tree in /proc")
def test_workers_exit_when_their_owner_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(OWNER)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    recorded: dict[int, int] = {}
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "short"
        recorded = descendants(owner.pid)
        names = " | ".join(survivors(recorded).values())
        assert "forkserver" in names and "resource_tracker" in names, names
        assert len(recorded) == 4, names  # the tracker, the fork server, two workers

        os.kill(owner.pid, signal.SIGKILL)  # the owner only, not its process group
        owner.wait(timeout=30)
        deadline = time.monotonic() + ORPHAN_BOUND_S
        while survivors(recorded) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert survivors(recorded) == {}, f"left behind: {survivors(recorded)}"
    finally:
        if owner.poll() is None:
            os.killpg(owner.pid, signal.SIGKILL)
        owner.wait(timeout=30)
        kill_all(recorded)
        for pipe in (owner.stdin, owner.stdout):
            if pipe is not None:
                pipe.close()


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_wait_for_exit_returns_once_the_process_is_gone(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:  # the portable fallback (macOS, kernels before 5.3)
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd on this platform")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    returned = threading.Event()
    watcher = threading.Thread(
        target=lambda: (wait_for_exit(child.pid), returned.set()), daemon=True
    )
    try:
        watcher.start()
        assert not returned.wait(0.5)  # the child runs: still waiting
        child.kill()
        child.wait()
        assert returned.wait(10), "wait_for_exit did not return after the process exited"
    finally:
        child.kill()
        child.wait()


def test_wait_for_exit_of_a_process_already_gone_returns_at_once() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    watcher = threading.Thread(target=wait_for_exit, args=(child.pid,), daemon=True)
    watcher.start()
    watcher.join(10)
    assert not watcher.is_alive(), "wait_for_exit blocked on a process that is gone"
