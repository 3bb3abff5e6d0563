"""How a run records itself: each step's start, resource use and outcome; the run's end; the
heartbeat that keeps its pipeline lock fresh while it lives."""

from __future__ import annotations

import getpass
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kiln.errors import KilnError
from kiln.registry.liveness import HEARTBEAT_EVERY, STALE_AFTER
from kiln.runs.reporting import Measured, Meter, Reporter
from kiln.stores import Stores
from kiln.stores.metadata.records import RunStatus, StepStatus

__all__ = [
    "HEARTBEAT_EVERY",
    "LOCK_STALE_AFTER",
    "Heartbeat",
    "actor",
    "code_revision",
    "finish_run",
    "interruption",
    "jsonable",
    "step",
]

LOCK_STALE_AFTER = STALE_AFTER


@contextmanager
def step(stores: Stores, reporter: Reporter, run_id: str, name: str) -> Iterator[Measured]:
    """Records a step's start, its resource use and its outcome."""
    with stores.metadata.unit_of_work() as uow:
        uow.steps.start(run_id, name)
    reporter.step(name, "running")
    meter, measured = Meter(), Measured()
    error: BaseException | None = None
    try:
        yield measured
    except BaseException as e:
        error = e
        raise
    finally:
        meter.read(measured)
        status: StepStatus = "succeeded" if error is None else "failed"
        with stores.metadata.unit_of_work() as uow:
            uow.steps.finish(
                run_id,
                name,
                status,
                wall_seconds=measured.wall_seconds,
                cpu_seconds=measured.cpu_seconds,
                peak_memory_bytes=measured.peak_memory_bytes,
                details=jsonable(measured.details),
                error=None if error is None else str(error),
            )
        reporter.step(name, status, f"{measured.wall_seconds:.2f}s")


def finish_run(stores: Stores, pipeline: str, run_id: str, status: RunStatus, error: str) -> None:
    with stores.metadata.unit_of_work() as uow:
        uow.runs.mark_finished(run_id, status, error=error)
        uow.locks.release(pipeline, run_id)


class Heartbeat:
    """Keeps the pipeline lock fresh so that another scheduler never takes it over."""

    def __init__(self, stores: Stores, pipeline: str, run_id: str) -> None:
        self._stores, self._pipeline, self._run_id = stores, pipeline, run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="kiln-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            try:
                with self._stores.metadata.unit_of_work() as uow:
                    uow.locks.heartbeat(self._pipeline, self._run_id)
            except KilnError:
                continue  # the next beat tries again; staleness is judged generously


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


def interruption(error: BaseException) -> bool:
    """Whether ``error`` is, or was raised while handling, a KeyboardInterrupt or SystemExit."""
    seen: BaseException | None = error
    for _ in range(20):
        if seen is None:
            return False
        if isinstance(seen, KeyboardInterrupt | SystemExit):
            return True
        seen = seen.__context__
    return False


def code_revision(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", "."],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
