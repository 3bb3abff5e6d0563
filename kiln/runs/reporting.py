"""What a run tells its caller while it works (the CLI draws it with Rich)."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["Measured", "Meter", "NullReporter", "Reporter", "host_and_pid"]


class Reporter(Protocol):
    def step(self, name: str, status: str, detail: str = "") -> None: ...
    def tasks_started(self, total: int, done: int) -> None: ...
    def task_done(self, key: str, ok: bool) -> None: ...
    def warn(self, text: str) -> None: ...


class NullReporter:
    def step(self, name: str, status: str, detail: str = "") -> None:
        pass

    def tasks_started(self, total: int, done: int) -> None:
        pass

    def task_done(self, key: str, ok: bool) -> None:
        pass

    def warn(self, text: str) -> None:
        pass


@dataclass
class Measured:
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0
    details: dict[str, object] = field(default_factory=dict)


_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        _CLEAR.write_text("5")


def _peak() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Meter:
    """Wall time, CPU seconds and peak resident memory of this process since ``start``."""

    def __init__(self) -> None:
        _reset_peak()
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def read(self, into: Measured) -> Measured:
        into.wall_seconds = time.perf_counter() - self._t0
        into.cpu_seconds = time.process_time() - self._c0
        into.peak_memory_bytes = _peak()
        return into


def host_and_pid() -> tuple[str, int]:
    return os.uname().nodename, os.getpid()
