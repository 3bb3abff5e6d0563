"""Claiming firings: the ones due, the ones waiting for a retry, and the ones whose scheduler
stopped heartbeating (taken over after ``STALE_AFTER``; their attempt counts as failed).

Every claim is settled in the metadata database, so that two schedulers never run one firing
twice: a firing is claimed by inserting its (pipeline, due_at) row, a retry or a takeover by a
conditional update (kiln/stores/metadata/fires.py). A firing is claimed to run only while the
scheduler has room for one more run and no run of its pipeline in flight, and while no other
scheduler runs its pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kiln.scheduler._child import Attempt
from kiln.scheduler._due import decide, grace_for
from kiln.scheduler._folder import Pipeline, Scan
from kiln.stores.metadata.records import FireRecord, FireStatus
from kiln.stores.metadata.store import UnitOfWork

__all__ = ["STALE_AFTER", "Claims", "Outcome", "utcnow", "when"]

log = logging.getLogger("kiln.scheduler")

STALE_AFTER = timedelta(minutes=2)


def utcnow() -> datetime:
    return datetime.now(UTC)


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt of a firing ended (or that a missed firing was skipped)."""

    pipeline: str
    due_at: datetime
    attempt: int
    status: FireStatus
    run_id: str | None = None
    error: str | None = None


class Claims:
    """The claiming half of :class:`~kiln.scheduler.Scheduler`: the scheduler sets the
    attributes declared here, opens the units of work (``_uow``) and starts the run of each
    firing claimed (``_start``)."""

    name: str
    clock: Callable[[], datetime]
    poll_seconds: float
    max_runs: int
    retries: int
    retry_delay: float
    _attempts: dict[int, Attempt]
    """The runs in flight, per firing id."""
    _first_seen: dict[str, datetime]
    """When each scheduled pipeline was first seen (catch-up counts from there)."""
    _pending: set[int]
    """Firings that ``run_once`` left waiting for a retry."""
    _outcomes: list[Outcome]

    def _uow(self) -> AbstractContextManager[UnitOfWork]:
        raise NotImplementedError

    def _start(self, fire: FireRecord, pipeline: Pipeline) -> None:
        raise NotImplementedError

    def _claim(self, scan: Scan, only: set[int] | None) -> None:
        self._take_over_stale(scan)
        self._claim_retries(scan, only)
        if only is None:
            for name in sorted(scan.scheduled):
                self._claim_due(scan.scheduled[name])

    def _free(self, pipeline: str) -> bool:
        busy = any(a.pipeline == pipeline for a in self._attempts.values())
        return not busy and len(self._attempts) < self.max_runs

    def _take_over_stale(self, scan: Scan) -> None:
        older_than = utcnow() - STALE_AFTER
        pipelines = scan.scheduled | scan.unscheduled  # a retraining needs no schedule:
        with self._uow() as uow:
            stale = [
                f
                for f in uow.fires.stale_running(older_than)
                if f.pipeline in pipelines and f.id not in self._attempts
            ]
        for fire in stale:
            with self._uow() as uow:
                taken = uow.fires.take_over_stale(fire.id, fire.heartbeat_at, self.name)
                if taken is None:
                    continue
                error = (
                    f"scheduler {fire.scheduler} stopped heartbeating (last at"
                    f" {when(fire.heartbeat_at)}); attempt {fire.attempt} counts as failed"
                )
                status: FireStatus = "retrying" if fire.attempt <= self.retries else "failed"
                retry_at = None
                if status == "retrying":
                    retry_at = self.clock() + self._backoff(fire.attempt)
                uow.fires.finish(fire.id, status, None, error, retry_at, scheduler=self.name)
            self._outcomes.append(
                Outcome(fire.pipeline, fire.due_at, fire.attempt, status, error=error)
            )
            log.warning(
                "took over firing of %r due %s: %s", fire.pipeline, when(fire.due_at), error
            )

    def _claim_retries(self, scan: Scan, only: set[int] | None) -> None:
        with self._uow() as uow:
            due = uow.fires.due_retries(self.clock())
        for fire in due:
            pipeline = scan.scheduled.get(fire.pipeline) or scan.unscheduled.get(fire.pipeline)
            if pipeline is None or (only is not None and fire.id not in only):
                continue
            if not self._free(fire.pipeline):
                continue
            with self._uow() as uow:
                uow.fires.serialize(fire.pipeline)
                if uow.fires.running(fire.pipeline):
                    continue  # another scheduler is running this pipeline: its turn first
                taken = uow.fires.claim_retry(fire.id, fire.attempt, self.name, self.clock())
            if taken is not None:
                self._pending.discard(fire.id)
                self._start(taken, pipeline)

    def _claim_due(self, pipeline: Pipeline) -> None:
        schedule = pipeline.schedule
        if schedule is None or any(a.pipeline == pipeline.name for a in self._attempts.values()):
            return
        now = self.clock()
        config_path = str(pipeline.path)
        with self._uow() as uow:
            due = decide(
                schedule,
                now=now,
                last_due=uow.fires.last_due(pipeline.name),
                first_seen=self._first_seen.setdefault(pipeline.name, now),
                grace=grace_for(self.poll_seconds),
            )
            if due.skip is not None:
                late = int((now - due.skip).total_seconds())
                reason = (
                    f"missed: due {when(due.skip)}, {late}s late (catchup: skip runs a missed"
                    " firing only within its grace; `catchup: once` would run it)"
                )
                if uow.fires.skip(pipeline.name, due.skip, config_path, self.name, reason):
                    self._outcomes.append(
                        Outcome(pipeline.name, due.skip, 1, "skipped", error=reason)
                    )
                    log.warning(
                        "skipped %r due %s: %ss late (catchup: skip); next at %s",
                        pipeline.name, when(due.skip), late, when(due.next_at),
                    )  # fmt: skip
                return
            if due.fire is None or not self._free(pipeline.name):
                return
            uow.fires.serialize(pipeline.name)
            if uow.fires.running(pipeline.name):
                return  # another scheduler is running this pipeline: its turn first
            fire = uow.fires.claim(pipeline.name, due.fire, config_path, self.name)
        if fire is None:
            log.info(
                "firing of %r due %s was claimed by another scheduler",
                pipeline.name, when(due.fire),
            )  # fmt: skip
            return
        self._start(fire, pipeline)

    def _backoff(self, attempt: int) -> timedelta:
        """How long a failed ``attempt`` waits for its retry."""
        return timedelta(seconds=self.retry_delay * 2 ** (attempt - 1))
