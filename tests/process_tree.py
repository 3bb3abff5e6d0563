"""The process tree from /proc (Linux): what a killed process left running under it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from kiln.settings import Settings
from kiln.stores import Stores, open_stores
from kiln.stores.metadata.store import UnitOfWork

HAS_PROC = Path("/proc/self/stat").exists()

SLOW_TRAIN = """
import os
import time

from lightgbm import LGBMRegressor


def train(X, y, context):
    if context.segment == os.environ.get("KILN_TEST_SLOW_SEGMENT"):
        time.sleep(300)
    model = LGBMRegressor(n_estimators=10, n_jobs=context.threads, verbose=-1)
    return model.fit(X.to_numpy(), y.to_numpy())
"""
"""A train.py whose segment named by KILN_TEST_SLOW_SEGMENT sleeps in its worker (to kill a run
mid-training)."""


class RegistryPoll:
    """Reads the registry that a `kiln run` subprocess writes under ``home``: a read is False
    until the database exists and is migrated; ``stores`` stays open for the test's own reads."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.stores: Stores | None = None

    def __call__(self, read: Callable[[UnitOfWork], bool]) -> bool:
        if not (self.home / "kiln.db").exists():
            return False
        try:
            self.stores = self.stores or open_stores(Settings(home=self.home))
            with self.stores.metadata.unit_of_work() as uow:
                return read(uow)
        except Exception:  # the schema may still be migrating
            return False

    def close(self) -> None:
        if self.stores is not None:
            self.stores.close()


def tasks_succeeded(n: int) -> Callable[[UnitOfWork], bool]:
    """A read: the first run has ``n`` segment tasks succeeded."""

    def read(uow: UnitOfWork) -> bool:
        runs = uow.runs.list()
        return bool(runs) and len(uow.tasks.succeeded(runs[0].id)) == n

    return read


def wait_for(predicate, timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("timed out waiting")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, parent pid, start time)`` of ``pid``, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live process under ``root`` (children, recursively): pid -> start time."""
    parents: dict[int, int] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) and stat[0] != "Z":
            parents[int(entry)], starts[int(entry)] = stat[1], stat[2]
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = starts[pid]
                frontier.append(pid)
    return found


def survivors(recorded: dict[int, int]) -> dict[int, str]:
    """The recorded processes still running, each with its RSS and command line.

    A zombie has exited (init reaps it, or in some containers never does); a pid with another
    start time is a new process that reused the pid.
    """
    alive = {}
    for pid, start in recorded.items():
        stat = _stat(pid)
        if stat is None or stat[0] == "Z" or stat[2] != start:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        rss = pages * os.sysconf("SC_PAGESIZE") / 2**20
        alive[pid] = f"{rss:.0f} MB {cmdline.decode(errors='replace')[:120]}"
    return alive


def kill_all(recorded: dict[int, int]) -> None:
    """SIGKILL whatever of ``recorded`` still runs (a failed test must not leak processes)."""
    for pid in survivors(recorded):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
