"""Helpers of the scheduler tests: the real `kiln scheduler` in a child process, and waiting."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

WAIT = 120.0  # seconds a test waits for the scheduler at most (a run takes a few seconds)


def start_scheduler(
    env: dict[str, str], cwd: Path, folder: Path, *args: str, log: IO[str] | None = None
) -> subprocess.Popen[str]:
    """Start `kiln scheduler --dir folder *args`; its log goes to ``log`` when given (so that
    a test reads it as it grows; stdout is then dropped), else to a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "scheduler", "--dir", str(folder), *args],
        cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE if log is None else subprocess.DEVNULL,
        stderr=subprocess.PIPE if log is None else log,
    )  # fmt: skip


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
