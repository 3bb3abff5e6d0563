"""``make_executor``: the one way the rest of Kiln gets an executor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from kiln.executors._local import LocalExecutor
from kiln.executors._ray import RayExecutor
from kiln.executors._types import Executor


def make_executor(
    kind: Literal["local", "ray"],
    *,
    workers: int,
    threads_per_task: int = 1,
    memory_per_task: int | None = None,
    ray_address: str | None = None,
    preload: Sequence[str] = (),
) -> Executor:
    """An executor that runs ``workers`` tasks at once, each with ``threads_per_task`` threads.

    ``memory_per_task`` (bytes) is a scheduling reservation on Ray; the local executor does not
    enforce it. ``preload`` names modules every worker imports as it starts, so that
    ``warm_up()`` overlaps them with the caller's own work.
    """
    if kind == "local":
        return LocalExecutor(workers=workers, threads_per_task=threads_per_task, preload=preload)
    if kind == "ray":
        return RayExecutor(
            workers=workers,
            threads_per_task=threads_per_task,
            memory_per_task=memory_per_task,
            ray_address=ray_address,
            preload=preload,
        )
    raise ValueError(f"unknown executor kind {kind!r}: expected 'local' or 'ray'")
