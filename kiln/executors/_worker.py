"""What runs inside a worker process: thread limits at start-up and the measured task wrapper.

Both executors call :func:`run_task` in the worker, so usage is measured the same way on
every backend. This module imports nothing heavy: it is the first thing a new worker loads.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import resource
import sys
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from time import perf_counter, process_time
from typing import Any, TypeVar

from kiln.executors._transport import Packed, pack
from kiln.executors._types import TaskOutcome, Usage, failure
from kiln.executors._watchdog import exit_with_owner

T = TypeVar("T")
R = TypeVar("R")

LOG_LIMIT = 64 * 1024
"""Bytes of captured output kept per task: the start and the end, with a marker between."""

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
_TRACEBACK_FRAMES = 6
_MESSAGE_LIMIT = 4096
_LOG_HEAD = 16 * 1024

logger = logging.getLogger(__name__)


class _WorkerState:
    """Per-process state, set once by :func:`init_worker` (local executor only).

    ``slots`` is an array shared with the parent: ``(pid, running task number)`` per worker,
    read by the parent after a worker died to find the task it was running.
    """

    slots: Any = None
    index = -1
    owner = os.getpid()
    thread_limits: Any = None


_state = _WorkerState()


@dataclass(frozen=True)
class WorkerSetup:
    """What a local worker needs at start-up (sent once per worker process)."""

    owner: int
    """pid of the process that made the executor: it owns the shared memory."""
    threads: int
    sys_path: tuple[str, ...]
    slots: Any
    counter: Any
    preload: tuple[str, ...]


def init_worker(setup: WorkerSetup) -> None:
    """Initializer of a local worker. Never raises: a failing initializer breaks the pool.

    First of all the worker starts watching the owner, so that it exits when the owner dies
    (see :mod:`kiln.executors._watchdog`), even during the preload imports.
    """
    _state.owner = setup.owner
    try:
        exit_with_owner(setup.owner)
    except Exception:
        logger.exception("kiln worker %d: cannot watch its owner %d", os.getpid(), setup.owner)
    try:
        limit_threads(setup.threads)
        sys.path.extend(p for p in setup.sys_path if p not in sys.path)
        with setup.counter.get_lock():
            index = setup.counter.value
            setup.counter.value += 1
        if index < len(setup.slots) // 2:
            _state.slots, _state.index = setup.slots, index
            setup.slots[2 * index] = os.getpid()
    except Exception:
        logger.exception("kiln worker %d: start-up failed", os.getpid())
    for name in setup.preload:
        try:
            importlib.import_module(name)
        except Exception:
            logger.exception("kiln worker %d: could not preload %r", os.getpid(), name)


def limit_threads(threads: int) -> None:
    """Cap native thread pools (OpenMP, BLAS) of this process at ``threads``.

    The environment covers libraries loaded from now on; threadpoolctl covers those already
    loaded (a forkserver may have imported the caller's ``__main__`` and its numpy).
    """
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _state.thread_limits = threadpool_limits(limits=threads)


def noop(preload: Sequence[str] = ()) -> int:
    """Warm-up task: the worker is started, its imports done."""
    for name in preload:
        importlib.import_module(name)
    return os.getpid()


def run_packed(key: str, call: Packed, seq: int) -> Packed:
    """The local executor's task: load ``(fn, arg)``, run it measured, pack the outcome.

    Loading and packing happen here rather than in the pool's own (un)pickling, so that a
    function the worker cannot import, or a result it cannot pickle, is that task's error
    instead of a broken pool.
    """
    _mark_running(seq)
    try:
        return _load_run_pack(key, call)
    finally:
        _mark_running(0)


def _load_run_pack(key: str, call: Packed) -> Packed:
    started_at = datetime.now(UTC)
    baseline = _baseline()  # before the inputs are loaded: they are the task's own memory
    try:
        fn, arg = call.load()
    except Exception as exc:
        error = f"the worker could not load the task: {format_error(exc)}"
        return pack(failure(key, error, started_at), owner=_state.owner)
    outcome = run_task(key, fn, arg, baseline=baseline)
    del arg
    try:
        return pack(outcome, owner=_state.owner)
    except Exception as exc:
        error = f"the task's result cannot be pickled: {format_error(exc)}"
        return pack(replace(outcome, value=None, error=error), owner=_state.owner)


def _mark_running(seq: int) -> None:
    """Tell the parent which task this worker runs (0: none), in case the worker dies."""
    if _state.slots is not None:
        _state.slots[2 * _state.index + 1] = seq


def run_task(
    key: str, fn: Callable[[T], R], arg: T, *, baseline: tuple[bool, int | None] | None = None
) -> TaskOutcome[R]:
    """Run ``fn(arg)`` and measure it; an exception becomes the outcome's ``error``.

    ``baseline``: the peak reset and the resident set taken before ``arg`` was loaded (the
    local pool), so that the task's own memory includes its inputs; without it (Ray, whose
    arguments are loaded before the task starts) they are taken here."""
    buffer = _BoundedText()
    handler = _BufferHandler(buffer)
    root = logging.getLogger()
    root_level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    value: R | None = None
    error: str | None = None
    reset, base = baseline if baseline is not None else _baseline()
    started_at = datetime.now(UTC)
    wall0, cpu0 = perf_counter(), process_time()
    try:
        with redirect_stdout(buffer), redirect_stderr(buffer):
            value = fn(arg)
    except (Exception, SystemExit) as exc:  # a task failure is a result, not a worker crash
        error = format_error(exc, skip_frames=1)
    finally:
        wall, cpu = perf_counter() - wall0, process_time() - cpu0
        finished_at = datetime.now(UTC)
        root.removeHandler(handler)
        root.setLevel(root_level)
    peak = _peak_memory(reset)
    usage = Usage(
        wall_seconds=wall,
        cpu_seconds=cpu,
        peak_memory_bytes=peak,
        base_memory_bytes=None if base is None or not reset else min(base, peak),
    )
    return TaskOutcome(key, value, error, usage, buffer.getvalue(), started_at, finished_at)


def format_error(exc: BaseException, *, skip_frames: int = 0) -> str:
    """``"ExcType: message"`` then the last frames of the traceback."""
    message = str(exc)
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + " [...]"
    text = f"{type(exc).__name__}: {message}"
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None:
            tb = tb.tb_next
    frames = traceback.extract_tb(tb)[-_TRACEBACK_FRAMES:]
    if frames:
        text += "\nTraceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    return text.rstrip("\n")


def _baseline() -> tuple[bool, int | None]:
    """Reset the peak, then read the resident set: what the worker holds before a task."""
    return _reset_peak_memory(), _resident_memory()


def _reset_peak_memory() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS. Linux only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _status_bytes(field: bytes) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes (None: not on Linux)."""
    try:
        with open("/proc/self/status", "rb") as f:
            status = f.read()
        start = status.index(field) + len(field)
        return int(status[start : status.index(b"kB", start)]) * 1024
    except (OSError, ValueError):
        return None


def _resident_memory() -> int | None:
    """This process's resident set now (VmRSS): what the worker holds before a task."""
    return _status_bytes(b"VmRSS:")


def _peak_memory(reset: bool) -> int:
    if reset:
        peak = _status_bytes(b"VmHWM:")
        if peak is not None:
            return peak  # else fall through to the process-lifetime peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class _BoundedText(io.TextIOBase):
    """A text sink that keeps the first and the last part of what is written to it."""

    def __init__(self) -> None:
        self._head: list[str] = []
        self._head_len = 0
        self._tail: deque[str] = deque()
        self._tail_len = 0

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        n = len(s)
        room = _LOG_HEAD - self._head_len
        if room > 0:
            self._head.append(s[:room])
            self._head_len += min(n, room)
            s = s[room:]
        if s:
            self._tail.append(s)
            self._tail_len += len(s)
            while self._tail and self._tail_len - len(self._tail[0]) >= LOG_LIMIT:
                self._tail_len -= len(self._tail.popleft())
        return n

    def getvalue(self) -> str:
        head, tail = "".join(self._head), "".join(self._tail)
        data = (head + tail).encode("utf-8", "replace")
        if len(data) <= LOG_LIMIT:
            return head + tail
        marker = "\n[... log truncated by kiln ...]\n"
        keep_tail = LOG_LIMIT - _LOG_HEAD - len(marker)
        head_text = data[:_LOG_HEAD].decode("utf-8", "ignore")
        tail_text = data[-keep_tail:].decode("utf-8", "ignore")
        return head_text + marker + tail_text


class _BufferHandler(logging.Handler):
    def __init__(self, buffer: _BoundedText) -> None:
        super().__init__()
        self.buffer = buffer
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.buffer.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)
