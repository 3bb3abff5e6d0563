"""The scale-out executor: one Ray task per Kiln task, on a local or remote Ray cluster.

Ray is an optional extra and is imported only when this executor is made. Each task runs
:func:`kiln.executors._worker.run_task` on a Ray worker, so its usage and log are measured
exactly as on the local executor.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from types import ModuleType, TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

from kiln.errors import ExecutorError
from kiln.executors._types import TaskOutcome, check_keys, failure
from kiln.executors._worker import THREAD_ENV_VARS, format_error, noop, run_task

T = TypeVar("T")
R = TypeVar("R")

_CONNECT_TIMEOUT_S = 5.0


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as e:
        raise ExecutorError(
            "the ray executor needs the optional extra: pip install 'kiln[ray]'",
            hint="or use the local executor (executor: local)",
        ) from e
    return ray


class RayExecutor:
    """Runs tasks as Ray tasks of ``threads_per_task`` CPUs (and ``memory_per_task`` bytes).

    Without ``ray_address`` it starts a local Ray cluster of ``workers * threads_per_task``
    CPUs whose workers see the caller's ``sys.path``; with one, it connects to that cluster,
    where the task functions must be importable (install the code there). Either way the
    workers' native thread pools are capped at ``threads_per_task``. If Ray is already
    initialized in this process, that connection is reused as it is. ``close()`` shuts Ray
    down only if this executor called ``ray.init``. Numpy inputs arrive read-only (Ray maps
    them from its object store without copying).
    """

    name = "ray"

    def __init__(
        self,
        *,
        workers: int,
        threads_per_task: int = 1,
        memory_per_task: int | None = None,
        ray_address: str | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        if workers < 1 or threads_per_task < 1:
            raise ValueError(
                f"workers and threads_per_task must be at least 1, "
                f"got workers={workers}, threads_per_task={threads_per_task}"
            )
        ray = import_ray()
        if ray_address is not None:
            _check_reachable(ray_address)
        self._ray = ray
        self.workers = workers
        self.threads_per_task = threads_per_task
        self._preload = tuple(preload)
        self._owns_ray = False
        if not ray.is_initialized():
            _init_ray(ray, ray_address, workers=workers, threads=threads_per_task)
            self._owns_ray = True
        options: dict[str, Any] = {"num_cpus": threads_per_task, "max_retries": 0}
        if memory_per_task is not None:
            options["memory"] = memory_per_task
        self._task = ray.remote(run_task).options(**options)
        self._noop = ray.remote(noop).options(num_cpus=threads_per_task)
        self._warm_ups: list[Any] = []
        self._closed = False

    def warm_up(self) -> None:
        self._check_open()
        self._warm_ups = [self._noop.remote(self._preload) for _ in range(self.workers)]

    def map(self, fn: Callable[[T], R], tasks: Sequence[tuple[str, T]]) -> Iterator[TaskOutcome[R]]:
        check_keys(tasks)
        self._check_open()
        return self._run(fn, list(tasks))

    def close(self, *, cancel: bool = False) -> None:
        if self._closed:
            return
        self._closed = True  # a map's generator cancels its waiting tasks when it is closed
        self._warm_ups = []
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ExecutorError(
                "the ray executor is closed", hint="create a new one with make_executor()"
            )

    def _run(self, fn: Callable[[T], R], tasks: list[tuple[str, T]]) -> Iterator[TaskOutcome[R]]:
        ray = self._ray
        fn_ref = ray.put(fn)
        submitted = datetime.now(UTC)
        keys = {self._task.remote(key, fn_ref, arg): key for key, arg in tasks}
        waiting = list(keys)
        try:
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                for ref in ready:
                    try:
                        outcome: TaskOutcome[R] = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        outcome = failure(keys[ref], _describe_ray_error(ray, e), submitted)
                    yield outcome
        finally:
            for ref in waiting:
                ray.cancel(ref)


def _init_ray(ray: ModuleType, address: str | None, *, workers: int, threads: int) -> None:
    """Start a local cluster, or connect to ``address``.

    Every worker of the job gets its native thread pools capped at ``threads`` (the CPUs of
    one task); on a local cluster, workers also get the caller's import path.
    """
    env = {var: str(threads) for var in THREAD_ENV_VARS}
    common: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "ignore_reinit_error": True,
    }
    if address is None:
        env["PYTHONPATH"] = os.pathsep.join(_driver_paths())
        try:
            ray.init(
                address="local", num_cpus=workers * threads, runtime_env={"env_vars": env}, **common
            )
        except Exception as e:
            raise ExecutorError(
                f"could not start a local Ray cluster: {type(e).__name__}: {e}",
                hint="check that ports are free and /tmp is writable, or use the local executor",
            ) from e
        return
    try:
        ray.init(address=address, runtime_env={"env_vars": env}, **common)
    except Exception as e:
        raise ExecutorError(
            f"could not connect to the Ray cluster at {address!r}: {type(e).__name__}: {e}",
            hint=_connect_hint(address),
        ) from e


def _driver_paths() -> list[str]:
    """Directories on the caller's import path that a fresh interpreter would not have."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    prefixes = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    extra = [
        p
        for p in (os.path.abspath(p) for p in sys.path if p)
        if os.path.isdir(p) and not p.startswith(prefixes) and p not in inherited
    ]
    return inherited + list(dict.fromkeys(extra))


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's long reconnect loop, when nothing listens there."""
    if address == "auto" or address.startswith("local"):
        return
    parts = urlsplit(address if "://" in address else f"//{address}")
    if parts.hostname is None or parts.port is None:
        return
    try:
        with socket.create_connection((parts.hostname, parts.port), _CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise ExecutorError(
            f"could not connect to the Ray cluster at {address!r}: {e}",
            hint=_connect_hint(address),
        ) from e


def _connect_hint(address: str) -> str:
    return (
        f"start the cluster there (`ray start --head`) or fix ray_address {address!r} "
        "(a head node 'host:6379', or Ray Client 'ray://host:10001'); "
        "leave ray_address unset to start a local Ray cluster"
    )


def _describe_ray_error(ray: ModuleType, error: Exception) -> str:
    if isinstance(error, ray.exceptions.OutOfMemoryError):
        return f"worker process died (killed by Ray's out-of-memory monitor): {error}"
    if isinstance(error, ray.exceptions.WorkerCrashedError | ray.exceptions.LocalRayletDiedError):
        return f"worker process died (Ray: {type(error).__name__}): {error}"
    if isinstance(error, ray.exceptions.NodeDiedError):
        return f"worker process died (its Ray node died): {error}"
    return format_error(error)
