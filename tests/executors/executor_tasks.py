"""Module-level task functions for the executor tests (workers import them by name)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import numpy as np

logger = logging.getLogger("kiln.tests.executor_tasks")


def square(x: int) -> int:
    return x * x


def identity(x: Any) -> Any:
    return x


def fail_on_negative(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x


def sleep_then_return(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def spin(seconds: float) -> int:
    """Burn CPU for ``seconds`` of wall time and of the process's own CPU time (on a loaded
    machine the wall time passes before the CPU time does)."""
    end = time.perf_counter() + seconds
    cpu_end = time.process_time() + seconds
    n = 0
    while time.perf_counter() < end or time.process_time() < cpu_end:
        n += 1
    return n


def allocate(spec: tuple[int, float]) -> int:
    """Allocate and touch ``spec[0]`` MiB, hold it ``spec[1]`` seconds; return the worker pid."""
    mib, hold = spec
    block = np.ones(mib * 2**20, dtype=np.uint8)
    time.sleep(hold)
    del block
    return os.getpid()


def chatty(x: int) -> int:
    print(f"hello from task {x}")
    print(f"to stderr {x}", file=sys.stderr)
    logger.warning("careful with %d", x)
    logger.info("info line %d", x)
    return x


def flood(n_chars: int) -> int:
    print("FIRST-LINE")
    for _ in range(n_chars // 100):
        print("x" * 99)
    print("LAST-LINE")
    return n_chars


def crash_or_sleep(x: str | float) -> int:
    if x == "crash":
        time.sleep(0.3)
        os._exit(3)
    time.sleep(float(x))
    return os.getpid()


def thread_env(_: object) -> str | None:
    return os.environ.get("OMP_NUM_THREADS")


def unpicklable_result(_: object) -> object:
    return lambda: None


def worker_pid(_: object) -> int:
    return os.getpid()


def checksum(a: np.ndarray) -> int:
    """Read every byte of ``a`` (its pages become resident in the worker)."""
    return int(a.sum())
