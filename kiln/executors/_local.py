"""The default executor: a process pool on this machine.

Workers are started with ``forkserver`` (``spawn`` where it is missing), never ``fork``: the
caller may hold OpenMP threads (LightGBM), and a forked child of such a process can deadlock.

A worker that dies under a task (``os._exit``, a segfault, the OOM killer) breaks a
``ProcessPoolExecutor`` and fails every pending future. To tell the task that killed it from
the innocent ones, each worker writes ``(pid, task sequence number)`` into a shared array
while it runs a task; after the break, the task whose worker did not exit by the pool's own
SIGTERM gets the error, the pool is rebuilt and every other unfinished task runs again.

If the process that owns the executor dies (kill -9 included), each worker exits at once
(:mod:`kiln.executors._watchdog`); the fork server and the resource tracker then exit too.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import queue
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar, cast

from kiln.errors import ExecutorError
from kiln.executors._transport import LazyPacked, Packed, discard, sweep_orphans
from kiln.executors._types import TaskOutcome, check_keys, failure
from kiln.executors._worker import WorkerSetup, format_error, init_worker, noop, run_packed

T = TypeVar("T")
R = TypeVar("R")

_MAX_FRUITLESS_BREAKS = 3


@dataclass
class _Pending:
    key: str
    arg: Any
    pool: ProcessPoolExecutor
    submitted_at: datetime


class LocalExecutor:
    """Runs tasks on ``workers`` local processes, each limited to ``threads_per_task`` threads.

    ``preload`` names modules each worker imports as it starts (``warm_up`` then overlaps
    those imports with the caller's work). One ``map`` at a time per executor.
    """

    name = "local"

    def __init__(
        self, *, workers: int, threads_per_task: int = 1, preload: Sequence[str] = ()
    ) -> None:
        if workers < 1 or threads_per_task < 1:
            raise ValueError(
                f"workers and threads_per_task must be at least 1, "
                f"got workers={workers}, threads_per_task={threads_per_task}"
            )
        self.workers = workers
        self.threads_per_task = threads_per_task
        self._preload = tuple(preload)
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._ctx = mp.get_context(method)
        self._owner = os.getpid()
        self._pool: ProcessPoolExecutor | None = None
        self._slots: Any = None
        self._seq = itertools.count(1)
        self._warm_ups: list[Future[int]] = []
        self._fruitless_breaks = 0
        self._closed = False

    def warm_up(self) -> None:
        pool = self._ensure_pool()
        self._warm_ups = [pool.submit(noop) for _ in range(self.workers)]

    def map(self, fn: Callable[[T], R], tasks: Sequence[tuple[str, T]]) -> Iterator[TaskOutcome[R]]:
        check_keys(tasks)
        self._ensure_pool()
        return self._run(fn, list(tasks))

    def close(self, *, cancel: bool = False) -> None:
        self._closed = True
        if self._pool is not None:
            if cancel:  # stop running tasks now instead of waiting for them
                for proc in list(getattr(self._pool, "_processes", {}).values()):
                    proc.terminate()
            self._pool.shutdown(wait=not cancel, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._closed:
            raise ExecutorError(
                "the local executor is closed", hint="create a new one with make_executor()"
            )
        if self._pool is None:
            sweep_orphans()
            slots = self._ctx.RawArray("q", 2 * self.workers)
            counter = self._ctx.Value("i", 0)
            setup = WorkerSetup(
                owner=self._owner,
                threads=self.threads_per_task,
                sys_path=tuple(sys.path),
                slots=slots,
                counter=counter,
                preload=self._preload,
            )
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=self._ctx,
                initializer=init_worker,
                initargs=(setup,),
            )
            self._slots = slots
        return self._pool

    def _run(self, fn: Callable[[T], R], tasks: list[tuple[str, T]]) -> Iterator[TaskOutcome[R]]:
        done: queue.SimpleQueue[tuple[int, Future[Packed]]] = queue.SimpleQueue()
        pending: dict[int, _Pending] = {}
        futures: dict[int, Future[Packed]] = {}
        deaths: dict[int, str] = {}

        def submit(key: str, arg: T) -> None:
            pool = self._ensure_pool()
            seq = next(self._seq)
            call = LazyPacked((fn, arg), owner=self._owner)
            try:
                future = pool.submit(run_packed, key, cast(Packed, call), seq)
            except BrokenProcessPool:  # a worker died while no task of ours ran
                deaths.update(self._recover(pool))
                pool = self._ensure_pool()
                future = pool.submit(run_packed, key, cast(Packed, call), seq)
            pending[seq] = _Pending(key, arg, pool, datetime.now(UTC))
            futures[seq] = future
            future.add_done_callback(partial(_on_done, done, seq, call))

        try:
            for key, arg in tasks:
                submit(key, arg)
            while pending:
                seq, future = done.get()
                task = pending.pop(seq, None)
                futures.pop(seq, None)
                if task is None:
                    continue
                exc = future.exception()
                if exc is None:
                    self._fruitless_breaks = 0
                    yield _unpack(future.result(), task)
                elif isinstance(exc, BrokenProcessPool):
                    if task.pool is self._pool:
                        deaths.update(self._recover(task.pool))
                    if seq in deaths:
                        self._fruitless_breaks = 0
                        yield failure(task.key, deaths.pop(seq), task.submitted_at)
                    else:
                        submit(task.key, task.arg)
                else:
                    yield failure(task.key, format_error(exc), task.submitted_at)
        finally:
            for future in futures.values():
                if not future.cancel():  # already running: drop its result when it comes
                    future.add_done_callback(_drop_result)

    def _recover(self, pool: ProcessPoolExecutor) -> dict[int, str]:
        """After a worker died: find the task it ran, then replace the broken pool."""
        processes = dict(getattr(pool, "_processes", None) or {})
        slots = list(self._slots)
        pool.shutdown(wait=True)
        self._pool = None
        deaths: dict[int, str] = {}
        for i in range(self.workers):
            pid, seq = slots[2 * i], slots[2 * i + 1]
            if pid == 0 or seq == 0:
                continue
            process = processes.get(pid)
            code = process.exitcode if process is not None else None
            if code == -signal.SIGTERM:
                continue  # stopped by the pool after another worker died: run its task again
            deaths[seq] = f"worker process died ({_describe_exit(code)}, pid {pid})"
        if not deaths:
            self._fruitless_breaks += 1
            if self._fruitless_breaks >= _MAX_FRUITLESS_BREAKS:
                raise ExecutorError(
                    f"the local executor lost its worker processes {self._fruitless_breaks} "
                    "times in a row outside of any task",
                    hint="check memory limits (the OOM killer) and the modules the workers "
                    "preload; run one task in-process to see the failure",
                )
        return deaths


def _on_done(
    done: queue.SimpleQueue[tuple[int, Future[Packed]]],
    seq: int,
    call: LazyPacked,
    future: Future[Packed],
) -> None:
    discard(call.segment)  # normally unlinked by the worker already; not if it died
    done.put((seq, future))


def _drop_result(future: Future[Packed]) -> None:
    if not future.cancelled() and future.exception() is None:
        discard(future.result().segment)


def _unpack(result: Packed, task: _Pending) -> TaskOutcome[Any]:
    try:
        return cast(TaskOutcome[Any], result.load())
    except Exception as exc:
        error = f"could not load the task's result: {format_error(exc)}"
        return failure(task.key, error, task.submitted_at)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == signal.SIGKILL:
        return f"killed by {name}, possibly the out-of-memory killer"
    return f"killed by {name}"
