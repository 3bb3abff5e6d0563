"""After the claims of a pass: the ``after_tick`` hook (the release tick, the monitor pass and
its notifications) and the retraining an open alert asks for, for every pipeline of the folder,
scheduled or not (a kiln.yaml with ``monitor.retrain.on`` and no ``schedule:`` is retrained
only on drift or decay).

A hook can take minutes (a monitor pass computes up to its window budget, then delivers), and
the runs in flight are heartbeated only between the hooks; so while a hook runs, a thread
heartbeats this scheduler's running firings, or another scheduler would judge them stale after
``STALE_AFTER`` and take them over (and this one would then stop a healthy run). A thread
rather than a smaller budget per hook: the hook is the caller's (any callable), and no budget
bounds one slow window or one slow notification channel.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kiln.errors import KilnError
from kiln.release.events import ReleaseEvent
from kiln.scheduler._claims import Claims, Outcome
from kiln.scheduler._folder import Pipeline, Scan
from kiln.scheduler._retrain import claim_retrains
from kiln.stores import Stores

__all__ = ["HEARTBEAT_SECONDS", "Ticks"]

log = logging.getLogger("kiln.scheduler")

HEARTBEAT_SECONDS = 15.0


class Ticks(Claims):
    """The after-tick half of :class:`~kiln.scheduler.Scheduler` (it sets the attributes)."""

    after_tick: Callable[[str], object] | None
    heartbeat_seconds: float
    """How often the running firings are heartbeated (well under ``STALE_AFTER``)."""
    _stores: Stores | None
    _once: bool
    _refusals: dict[str, str]
    """The last refusal logged per pipeline (logged again only when it changes)."""

    def _attend(self) -> None:
        raise NotImplementedError

    def _guarded(self, step: Callable[[], Any]) -> Any:
        raise NotImplementedError

    def _tick(self, scan: Scan) -> None:
        pipelines = scan.scheduled | scan.unscheduled
        for name in sorted(pipelines):
            self._guarded(self._attend)  # record the runs that ended, heartbeat the others
            if self.after_tick is not None:
                self._hook(name, self.after_tick)
            self._guarded(functools.partial(self._retrain, pipelines[name]))

    def _hook(self, name: str, hook: Callable[[str], object]) -> None:
        try:
            with self._heartbeating():
                result = hook(name)
        except KilnError as e:
            log.error("after-tick of pipeline %r failed: %s", name, e)
            return
        except Exception:
            log.exception("after-tick of pipeline %r failed", name)
            return
        if isinstance(result, list | tuple):
            for item in result:  # the release controller's events, or plain lines
                line = item.message if isinstance(item, ReleaseEvent) else item
                log.info("%s: %s", name, line)

    @contextmanager
    def _heartbeating(self) -> Iterator[None]:
        """Heartbeat this scheduler's running firings from a thread until the block ends. The
        thread only proves this scheduler alive: a firing found taken over is stopped by the
        next ``_attend`` (its own heartbeat is due by then), in this thread."""
        fire_ids = list(self._attempts)
        if not fire_ids or self._stores is None:
            yield
            return
        metadata = self._stores.metadata
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.heartbeat_seconds):
                try:
                    with metadata.unit_of_work() as uow:
                        for fire_id in fire_ids:
                            uow.fires.heartbeat(fire_id, self.name)
                except KilnError as e:  # the database is away: the next beat tries again
                    log.error("heartbeat of %d running firing(s) failed: %s", len(fire_ids), e)
                except Exception:  # a bug must not end the beating while the hook runs
                    log.exception("heartbeat of %d running firing(s) failed", len(fire_ids))

        thread = threading.Thread(target=beat, name=f"kiln-heartbeat-{self.name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _retrain(self, pipeline: Pipeline) -> None:
        """Start the retraining an alert of the pipeline asks for (``monitor.retrain``), when
        this scheduler wins its claim (:mod:`kiln.scheduler._retrain`). A refusal of the policy
        is not recorded (the next pass decides again); it is logged when it changes."""
        policy = pipeline.loaded.config.monitor.retrain
        if not policy.on or not self._free(pipeline.name):
            return
        with self._uow() as uow:
            claims = claim_retrains(
                uow, pipeline.name, policy, str(pipeline.path), self.name, self.clock()
            )
        if not claims or claims[0].fire is not None:
            self._refusals.pop(pipeline.name, None)
        for claim in claims:
            if claim.fire is None:
                reason = claim.skipped or "refused by monitor.retrain"
                if self._refusals.get(pipeline.name) != reason:
                    log.warning("%s: %s", pipeline.name, reason)
                    self._refusals[pipeline.name] = reason
                if self._once:  # for the summary of `kiln scheduler --once`
                    opened = claim.alert.opened_at or self.clock()
                    self._outcomes.append(
                        Outcome(pipeline.name, opened, 1, "skipped", error=reason)
                    )
                continue
            log.info(
                "%s: alert #%d (%s) opened: retraining with `kiln run --trigger %s`",
                pipeline.name, claim.alert.id, claim.alert.check, claim.alert.kind,
            )  # fmt: skip
            self._start(claim.fire, pipeline)
