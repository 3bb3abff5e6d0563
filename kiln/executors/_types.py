"""The executor contract: one task in, one :class:`TaskOutcome` out, with its resource usage."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Usage:
    """Resources one task used, measured inside the worker that ran it.

    ``cpu_seconds`` counts every thread of the worker process (native OpenMP threads too);
    ``peak_memory_bytes`` is the worker's peak resident set during the task (its inputs
    included); ``base_memory_bytes`` the worker's resident set when the task started (the
    interpreter and its imports, what earlier tasks left behind; on the local pool before
    its inputs were loaded, on Ray after), so the task itself added
    ``peak_memory_bytes - base_memory_bytes`` (None: not measured).
    """

    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    base_memory_bytes: int | None = None

    @property
    def own_memory_bytes(self) -> int | None:
        """What the task added to its worker's resident set (None: the base is unknown)."""
        if self.base_memory_bytes is None:
            return None
        return max(0, self.peak_memory_bytes - self.base_memory_bytes)


@dataclass(frozen=True)
class TaskOutcome(Generic[R]):
    """What happened to one task. ``error`` is ``"ExcType: message"`` plus the traceback tail."""

    key: str
    value: R | None
    error: str | None
    usage: Usage
    log: str
    started_at: datetime
    finished_at: datetime

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(Protocol):
    """Runs ``fn(arg)`` for every ``(key, arg)`` on some pool of worker processes
    (``workers`` tasks at once, each with ``threads_per_task`` native threads).

    ``map`` yields one outcome per task in completion order and never raises because a task
    failed: an exception, or a worker that died under the task, becomes that task's ``error``.
    It raises :class:`~kiln.errors.ExecutorError` only when the executor itself cannot go on.
    ``fn`` must be a module-level function, importable by the workers.
    """

    name: str
    workers: int
    threads_per_task: int

    def warm_up(self) -> None:
        """Start the workers now, without waiting for them, so their start-up overlaps
        the caller's own work (loading data)."""
        ...

    def map(
        self, fn: Callable[[T], R], tasks: Sequence[tuple[str, T]]
    ) -> Iterator[TaskOutcome[R]]: ...

    def close(self, *, cancel: bool = False) -> None:
        """Release the workers; ``cancel=True`` stops tasks still running (an interrupted run)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def check_keys(tasks: Sequence[tuple[str, object]]) -> None:
    """Reject duplicate keys up front: outcomes are told apart by key."""
    seen: set[str] = set()
    for key, _ in tasks:
        if key in seen:
            raise ValueError(f"duplicate task key {key!r}: every task needs its own key")
        seen.add(key)


def failure(key: str, error: str, started_at: datetime) -> TaskOutcome[Any]:
    """The outcome of a task that never ran to the end inside a worker: no usage, no log."""
    return TaskOutcome(
        key=key,
        value=None,
        error=error,
        usage=Usage(wall_seconds=0.0, cpu_seconds=0.0, peak_memory_bytes=0),
        log="",
        started_at=started_at,
        finished_at=datetime.now(UTC),
    )
