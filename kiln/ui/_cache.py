"""Figures that take seconds to compute at scale (the cost report over every pipeline), kept
and recomputed in the background, so that a page shows them at once with the time they were
computed ("as of"), as cost dashboards do (AWS Cost Explorer refreshes a few times a day).

``get(key, compute)`` answers the last result of ``compute`` for ``key``: at once when it is
younger than ``ttl``; at once, while one background thread recomputes it, when it is older;
and only the first time (or when ``ttl`` is 0: never kept) by waiting for ``compute``. A
computation that fails is not kept: the error goes to the caller that waited for it, or to the
log when it ran in the background (the stale figures stay).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

__all__ = ["Kept", "Recent"]

T = TypeVar("T")
log = logging.getLogger("kiln.ui")


@dataclass(frozen=True)
class Kept(Generic[T]):
    value: T
    computed_at: datetime
    """When the computation that gave ``value`` started (UTC)."""


class Recent:
    def __init__(self, ttl: float, *, max_keys: int = 256) -> None:
        self.ttl = ttl
        self._max_keys = max_keys
        self._kept: dict[Hashable, tuple[float, Kept[Any]]] = {}
        self._running: dict[Hashable, Future[Kept[Any]]] = {}
        self._lock = threading.Lock()
        self._uncached = threading.BoundedSemaphore(1)
        self._pool: ThreadPoolExecutor | None = None  # made when first needed

    def get(self, key: Hashable, compute: Callable[[], T], *, keep: bool = True) -> Kept[T]:
        """``keep=False``: computed now and not kept (a period nobody else asks for), one such
        computation at a time: a visitor looping over periods cannot load every core."""
        if not keep:
            with self._uncached:
                return Kept(compute(), datetime.now(UTC))
        if self.ttl <= 0:
            return Kept(compute(), datetime.now(UTC))
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                at, kept = found
                if time.monotonic() - at >= self.ttl:
                    self._start(key, compute)  # stale: answered now, recomputed behind
                return kept
            running = self._running.get(key)
            if running is None:  # the first time: computed on this thread, others wait for it
                running = self._running[key] = Future()
                mine = True
            else:
                mine = False
        if mine:
            try:
                running.set_result(self._compute(key, compute))
            except BaseException as e:
                running.set_exception(e)
        return running.result()  # an error goes to every caller that waited for it

    def warm(self, key: Hashable, compute: Callable[[], T]) -> None:
        """Start computing ``key`` in the background (at start-up: the first visitor of the
        page then waits for a computation already under way, or not at all)."""
        if self.ttl > 0:
            with self._lock:
                if key not in self._kept:
                    self._start(key, compute)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _start(self, key: Hashable, compute: Callable[[], Any]) -> None:
        """Recompute ``key`` on the background thread unless it is being computed (lock held)."""
        if key in self._running:
            return

        def run() -> Kept[Any]:
            try:
                return self._compute(key, compute)
            except Exception:
                log.exception("recomputing %r failed; the page keeps its earlier figures", key)
                raise

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-ui-recent")
        self._running[key] = self._pool.submit(run)

    def _compute(self, key: Hashable, compute: Callable[[], Any]) -> Kept[Any]:
        started, at = time.monotonic(), datetime.now(UTC)
        try:
            kept = Kept(compute(), at)
        except BaseException:
            with self._lock:
                self._running.pop(key, None)
            raise
        with self._lock:  # kept and no longer running in one step: no second computation
            self._running.pop(key, None)
            if key not in self._kept and len(self._kept) >= self._max_keys:
                self._kept.pop(next(iter(self._kept)))  # the oldest key
            self._kept[key] = (started, kept)
        return kept
