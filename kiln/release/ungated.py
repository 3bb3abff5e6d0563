"""Release the versions that a dead run registered and never released.

A run records its release as its last step; when its process dies between registering and
releasing (kill -9, a lost machine), its version stays a candidate with no gate result.
``Release.tick`` (``kiln watch``, every pass of ``kiln scheduler``) finds such versions and does
the run's release step for it: it takes the pipeline's lock as ``release:<run id>`` and beats
it while it works (so that a live run, a ``--resume`` or another watcher cannot release it at the
same time, and a run wrongly judged dead fails its own next heartbeat), gates the version, acts
on the outcome, and records the step and the run as succeeded. A version whose release fails is
logged and tried again on the next pass; it never stops the pass.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from kiln.errors import ConcurrentRunError, KilnError
from kiln.registry.liveness import STALE_AFTER, Ungated, release_pending, ungated_versions
from kiln.release.events import EventKind, ReleaseEvent
from kiln.runs.reporting import NullReporter
from kiln.runs.steps import Heartbeat, step

if TYPE_CHECKING:
    from kiln.release.controller import Release

__all__ = ["release_ungated"]

logger = logging.getLogger(__name__)


def release_ungated(release: Release, pipeline: str) -> list[ReleaseEvent]:
    """Gate and release every candidate of ``pipeline`` that a dead run left ungated; returns
    one event per version released."""
    with release.stores.metadata.read() as uow:
        found = ungated_versions(uow, pipeline)
    events = []
    for u in found:
        try:
            event = _release_one(release, u)
        # One version must not stop the pass (the rollbacks of the pipeline come after it).
        except Exception as e:
            detail = str(e) if isinstance(e, KilnError) else f"{type(e).__name__}: {e}"
            logger.warning(
                "%s v%s: release failed, retried next pass: %s", pipeline, u.version, detail
            )
            continue
        if event:
            events.append(event)
    return events


def _release_one(release: Release, found: Ungated) -> ReleaseEvent | None:
    metadata = release.stores.metadata
    pipeline, run_id = found.pipeline, found.run_id
    owner = f"release:{run_id}"  # not the run's id: a run still alive fails its own heartbeat
    host, pid = os.uname().nodename, os.getpid()
    try:
        with metadata.unit_of_work() as uow:
            taken = uow.locks.acquire(pipeline, owner, host, pid, STALE_AFTER)
            if taken is not None and taken != run_id:  # another run of it died holding it
                uow.runs.mark_finished(taken, "interrupted", error="its process died")
    except ConcurrentRunError as e:  # a live run (or watcher) holds it: the next pass retries
        logger.info("%s v%s: not released yet: %s", pipeline, found.version, e)
        return None
    heartbeat = Heartbeat(release.stores, pipeline, owner)
    heartbeat.start()
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
        heartbeat.stop()
        with metadata.unit_of_work() as uow:
            uow.locks.release(pipeline, owner)
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
