"""Whether a run is alive, judged when reading, and the versions that dead runs left ungated.

A live run holds its pipeline's lock and beats it every ``HEARTBEAT_EVERY`` seconds. A run
recorded ``running`` is judged dead when it no longer holds the lock, when its heartbeat is
older than ``STALE_AFTER`` (``MISSED_BEATS`` beats), or when it ran on this host and its process
is gone. Nothing is written here: listings show such a run as ``interrupted``; the next run of
the pipeline (lock takeover) or a ``--resume`` records it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kiln.stores.metadata.locks import pid_alive
from kiln.stores.metadata.records import LockRecord, RunRecord, VersionRecord
from kiln.stores.metadata.store import UnitOfWork

__all__ = [
    "HEARTBEAT_EVERY",
    "MISSED_BEATS",
    "STALE_AFTER",
    "Ungated",
    "dead_reason",
    "release_pending",
    "shown_status",
    "ungated_versions",
]

HEARTBEAT_EVERY = 20.0
"""Seconds between two heartbeats of a live run."""
MISSED_BEATS = 6
STALE_AFTER = timedelta(seconds=HEARTBEAT_EVERY * MISSED_BEATS)
"""A heartbeat older than this: the run's process is dead (or cut off from the database)."""


def dead_reason(
    run: RunRecord, lock: LockRecord | None, *, now: datetime | None = None
) -> str | None:
    """Why a ``running`` run is dead, or None when it is alive (or not recorded running)."""
    if run.status != "running":
        return None
    if lock is None or lock.run_id != run.id:
        return "it no longer holds its pipeline's lock: its process died"
    now = now or datetime.now(UTC)
    silent = now - lock.heartbeat_at
    if silent > STALE_AFTER:
        return f"no heartbeat for {_duration(silent)}: its process is dead or cut off"
    if lock.host == os.uname().nodename and not pid_alive(lock.pid):
        return f"its process (pid {lock.pid} on {lock.host}) is gone"
    return None


def shown_status(run: RunRecord, lock: LockRecord | None, *, now: datetime | None = None) -> str:
    """The status to show: ``interrupted`` for a ``running`` run whose process is dead."""
    return "interrupted" if dead_reason(run, lock, now=now) else run.status


@dataclass(frozen=True)
class Ungated:
    """A candidate that a run registered and never released (the run died between the two,
    or while releasing it)."""

    pipeline: str
    version: int
    run_id: str
    gated: bool = False
    """Gate results were stored, but the run died before acting on them."""
    step_recorded: bool = True
    """The run recorded a release step (False: killed before it, or registered by a Kiln that
    had no release step, which also marked the run succeeded)."""

    def advice(self) -> str:
        what = "gated but never released" if self.gated else "never gated"
        return (
            f"v{self.version} candidate, {what}: run `kiln run --resume {self.run_id}`"
            f" or `kiln gates check {self.pipeline} {self.version}`"
        )


def release_pending(uow: UnitOfWork, version: VersionRecord) -> Ungated | None:
    """``version`` as a candidate whose run has not released it (None: released, or not to be
    released: ``--skip-gates``, an experiment, an unchanged run), whether its run lives or not."""
    if not _releasable(version):
        return None
    gated = bool(uow.gates.history(version.pipeline, version.version))
    release = next((s for s in uow.steps.for_run(version.run_id) if s.name == "release"), None)
    if release is None:
        pending = not gated  # killed before its release started (or registered by Kiln < 0.9)
    elif release.status == "running":
        pending = True  # killed while releasing: the results, if any, were never acted on
    else:  # done or skipped on purpose; a failed release (an error before or after the gates
        # stored their results) is tried again
        pending = release.status == "failed"
    if not pending:
        return None
    return Ungated(version.pipeline, version.version, version.run_id, gated, release is not None)


def ungated_versions(
    uow: UnitOfWork,
    pipeline: str,
    *,
    now: datetime | None = None,
    legacy: bool = False,
    versions: list[VersionRecord] | None = None,
) -> list[Ungated]:
    """The pipeline's candidates that their run did not release and never will: it is dead.

    Candidates of runs that a Kiln without a release step recorded as succeeded are left out
    unless ``legacy`` (``kiln status`` flags them): they may have been registered with
    ``--skip-gates`` on purpose, so no watcher releases them.
    ``versions``: the pipeline's candidates when the caller has read them already (only a
    candidate can be pending; `kiln status` reads them for a page of pipelines at once)."""
    lock = uow.locks.get(pipeline)
    found = []
    for v in uow.versions.list(pipeline) if versions is None else versions:
        pending = release_pending(uow, v)
        if pending is None:
            continue
        run = uow.runs.get(v.run_id)
        if run.status == "running" and dead_reason(run, lock, now=now) is None:
            continue  # its run is alive: it is releasing it now
        if run.status == "succeeded" and not pending.step_recorded and not legacy:
            # Registered by a Kiln without a release step (which marked the run succeeded at
            # register; `--skip-gates` runs look the same): `kiln status` flags it, and only
            # its owner releases it (`kiln run --resume`, `kiln gates check`), never a watcher.
            continue
        found.append(pending)
    return found


def _releasable(v: VersionRecord) -> bool:
    return (
        v.stage == "candidate"
        and v.experiment is None
        and (v.lineage or {}).get("unchanged_from") is None
    )


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds >= 7200:
        return f"{seconds // 3600}h"
    if seconds >= 120:
        return f"{seconds // 60}m"
    return f"{seconds}s"
