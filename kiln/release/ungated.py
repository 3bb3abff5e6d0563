"""Release the versions that a dead run registered and never released.

A run records its release as its last step; when its process dies between registering and
releasing (kill -9, a lost machine), its version stays a candidate with no gate result.
``Release.tick`` (``kiln watch``, every pass of ``kiln scheduler``) finds such versions and does
the run's release step for it: it takes the pipeline's lock in the run's name (so that a live
run, a ``--resume`` or another watcher cannot release it at the same time), gates the version,
acts on the outcome, and records the step and the run as succeeded.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from kiln.errors import ConcurrentRunError
from kiln.registry.liveness import STALE_AFTER, Ungated, release_pending, ungated_versions
from kiln.release.events import EventKind, ReleaseEvent
from kiln.runs.reporting import NullReporter
from kiln.runs.steps import step

if TYPE_CHECKING:
    from kiln.release.controller import Release

__all__ = ["release_ungated"]

logger = logging.getLogger(__name__)


def release_ungated(release: Release, pipeline: str) -> list[ReleaseEvent]:
    """Gate and release every candidate of ``pipeline`` that a dead run left ungated; returns
    one event per version released."""
    with release.stores.metadata.read() as uow:
        found = ungated_versions(uow, pipeline)
    return [event for u in found if (event := _release_one(release, u))]


def _release_one(release: Release, found: Ungated) -> ReleaseEvent | None:
    metadata = release.stores.metadata
    pipeline, run_id = found.pipeline, found.run_id
    host, pid = os.uname().nodename, os.getpid()
    try:
        with metadata.unit_of_work() as uow:
            uow.locks.acquire(pipeline, run_id, host, pid, STALE_AFTER)
    except ConcurrentRunError as e:  # a live run (or watcher) holds it: the next pass retries
        logger.info("%s v%s: not released yet: %s", pipeline, found.version, e)
        return None
    try:
        with metadata.unit_of_work() as uow:  # another watcher may have released it meanwhile
            pending = release_pending(uow, uow.versions.get(pipeline, found.version))
        if pending is None:
            return None
        with step(release.stores, NullReporter(), run_id, "release") as m:
            decision = release.after_run(pipeline, found.version)
            m.details |= {
                "outcome": decision.outcome,
                "message": decision.message[:500],
                "gates": {r.gate: r.status for r in decision.results},
                "released_by": f"kiln watch on {host} (pid {pid}): the run died before it",
            }
        with metadata.unit_of_work() as uow:
            uow.runs.mark_finished(run_id, "succeeded", model_version=found.version)
    finally:
        with metadata.unit_of_work() as uow:
            uow.locks.release(pipeline, run_id)
    message = (
        f"{pipeline} v{found.version} {decision.outcome}: gated after its run {run_id} died"
        f" before releasing it: {decision.message}"
    )
    details = {
        "run_id": run_id,
        "outcome": decision.outcome,
        "gates": {r.gate: r.status for r in decision.results},
    }
    return ReleaseEvent(
        pipeline, found.version, EventKind.RELEASED_UNGATED, message, release.clock(), details
    )
