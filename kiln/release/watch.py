"""The watch pass: move live versions on, and roll back a new production version in trouble.

``tick`` (run by ``kiln watch`` and by every pass of ``kiln scheduler``, through
``Release.tick``) moves versions on: a candidate whose run died before releasing it is gated and
released now (:mod:`kiln.release.ungated`); a shadow whose period is over is judged on live
traffic; a canary is promoted once its watch window passed healthy, or blocked as soon as it is
not; a production version promoted within its watch window is rolled back automatically when
its error rate or p99 latency passes the thresholds. Every change goes through
:class:`~kiln.registry.stages.Stages` (one transaction, a deployment row and an audit event,
actor ``kiln``) and is returned as a :class:`~kiln.release.events.ReleaseEvent`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kiln.errors import KilnError, NotFoundError
from kiln.gates.base import GateContext, GateResult, GateStatus
from kiln.gates.shadow import ShadowGate
from kiln.monitoring.live import LiveStats, live_stats
from kiln.registry.version import Version
from kiln.release.decision import SYSTEM_ACTOR, measured, run_gate
from kiln.release.events import EventKind, ReleaseEvent
from kiln.release.ungated import release_ungated
from kiln.runs.reporting import Meter
from kiln.stores.metadata.records import Stage, VersionRecord

if TYPE_CHECKING:
    from kiln.release.controller import Release

__all__ = ["tick"]

logger = logging.getLogger(__name__)

_AFTER_SHADOW = {"promoted": EventKind.PROMOTED, "canary": EventKind.CANARY_STARTED}


def tick(release: Release, pipeline: str) -> list[ReleaseEvent]:
    """One pass over the pipeline's candidates that a dead run left ungated, its shadow,
    canary and new production version; returns what it did, one event per change."""
    events: list[ReleaseEvent] = []
    try:  # a version whose run died between registering and releasing it
        events += release_ungated(release, pipeline)
    except KilnError as e:
        logger.warning("release of the ungated versions of %s: %s", pipeline, e)
    with release.stores.metadata.read() as uow:
        versions = uow.versions.list(pipeline)
    for record in versions:
        try:
            if record.stage == "shadow":
                events += _tick_shadow(release, record)
            elif record.stage == "canary":
                events += _tick_canary(release, record)
            elif record.stage == "production":
                events += _tick_production(release, record)
        except KilnError as e:
            logger.warning("release watch of %s v%s: %s", pipeline, record.version, e)
        except Exception:  # one bad capture file must not stop the watch of the others
            logger.exception("release watch of %s v%s failed", pipeline, record.version)
    return events


def _tick_shadow(release: Release, record: VersionRecord) -> list[ReleaseEvent]:
    if release.stored(record).get("shadow") != "pending":
        return []  # shadowed by hand, or already judged
    candidate, champion = release.versions(record.pipeline, record.version)
    result = run_gate(ShadowGate(), candidate, champion, release.context(candidate))
    if result.status == "pending":
        release.store(candidate, [result], trigger="watch", champion=champion)
        return []
    # The stage changes first: if it fails, the gate is still pending and judged again.
    if not result.ok:
        return _block(release, candidate, result, only_from="shadow", champion=champion)
    decision = release.advance(candidate, champion, [result], "shadow period passed")
    release.store(candidate, [result], trigger="watch", champion=champion)
    message = f"{record.pipeline} v{record.version} {decision.outcome}: {decision.message}"
    kind = _AFTER_SHADOW.get(decision.outcome, EventKind.SHADOW_PASSED)
    details = {"gate": result.gate, "outcome": decision.outcome, "evidence": result.evidence}
    return [_event(release, record, kind, message, details)]


def _tick_canary(release: Release, record: VersionRecord) -> list[ReleaseEvent]:
    candidate = Version(release.stores, record)
    policy = candidate.policy.rollback
    meter = Meter()
    stats = _live(release, record, "canary", since=record.stage_changed_at)
    problem = _unhealthy(stats, policy.max_error_rate, policy.max_p99_ms, policy.min_requests)
    over = release.clock() - record.stage_changed_at >= policy.watch
    if problem is None and not over:
        return []
    if problem is None and stats.requests < policy.min_requests:
        return []  # the window is over but too little traffic to judge: keep waiting
    status: GateStatus = "failed" if problem else "passed"
    summary = problem or (
        f"healthy for {policy.watch}: {stats.requests} requests,"
        f" error rate {stats.error_rate:.2%}, p99 {stats.p99_ms:.1f} ms"
    )
    result = measured(GateResult("canary", status, summary, stats.as_evidence()), meter)
    if problem:
        return _block(release, candidate, result, only_from="canary")
    change = release.stages.promote(
        record.pipeline,
        record.version,
        actor=SYSTEM_ACTOR,
        reason=f"canary: {summary}",
        only_from="canary",
    )
    release.store(candidate, [result], trigger="watch")
    if not change.changed:
        return []
    message = f"{record.pipeline} v{record.version} promoted: canary {summary}"
    details: dict[str, Any] = {"gate": result.gate, "evidence": result.evidence}
    return [_event(release, record, EventKind.CANARY_PROMOTED, message, details)]


def _tick_production(release: Release, record: VersionRecord) -> list[ReleaseEvent]:
    version = Version(release.stores, record)
    policy = version.policy.rollback
    if release.clock() - record.stage_changed_at > policy.watch:
        return []
    if release.stored(record).get("live") == "failed":
        return []  # already judged (and the rollback refused): do not repeat every tick
    with release.stores.metadata.read() as uow:
        latest = uow.deployments.list(record.pipeline, limit=1)
    if not latest or latest[0].action != "promote" or latest[0].version != record.version:
        # Put back by a rollback: it served before, and rolling it back too would walk the
        # whole history back when the trouble is the traffic, not the versions.
        return []
    meter = Meter()
    stats = _live(release, record, "production", since=record.stage_changed_at)
    problem = _unhealthy(stats, policy.max_error_rate, policy.max_p99_ms, policy.min_requests)
    if problem is None:
        return []
    result = measured(GateResult("live", "failed", problem, stats.as_evidence()), meter)
    reason = f"automatic rollback within the {policy.watch} watch window: {problem}"
    details: dict[str, Any] = {"gate": result.gate, "evidence": result.evidence}
    try:
        change = release.stages.rollback(
            record.pipeline, actor=SYSTEM_ACTOR, reason=reason, only_from=record.version
        )
    except NotFoundError as e:  # nothing to roll back to: say it once, not every tick
        release.store(version, [result], trigger="watch")
        message = f"{record.pipeline} v{record.version} is unhealthy ({problem}) but: {e}"
        details |= {"reason": str(e)}
        return [_event(release, record, EventKind.ROLLBACK_REFUSED, message, details)]
    release.store(version, [result], trigger="watch")
    if not change.changed:
        return []  # another watcher rolled it back first
    message = f"{record.pipeline}: rolled back v{record.version} -> v{change.version}: {problem}"
    details |= {"to_version": change.version}
    return [_event(release, record, EventKind.ROLLED_BACK, message, details)]


def _block(
    release: Release,
    candidate: Version,
    result: GateResult,
    *,
    only_from: Stage,
    champion: Version | None = None,
) -> list[ReleaseEvent]:
    """Block a version that failed a live gate (if it is still in ``only_from``), then
    store the result: a failed stage change leaves the gate to be judged again."""
    what = f"{result.gate}: {result.summary}"
    change = release.stages.block(
        candidate.pipeline,
        candidate.number,
        actor=SYSTEM_ACTOR,
        reason=f"failed gates: {what}",
        only_from=only_from,
    )
    release.store(candidate, [result], trigger="watch", champion=champion)
    if not change.changed:
        return []
    message = f"{candidate.pipeline} v{candidate.number} blocked: {what}"
    details = {"gate": result.gate, "from_stage": only_from, "evidence": result.evidence}
    return [_event(release, candidate.record, EventKind.BLOCKED, message, details)]


def _event(
    release: Release,
    record: VersionRecord,
    kind: EventKind,
    message: str,
    details: Mapping[str, Any],
) -> ReleaseEvent:
    return ReleaseEvent(record.pipeline, record.version, kind, message, release.clock(), details)


def _live(release: Release, record: VersionRecord, stage: str, *, since: datetime) -> LiveStats:
    policy = Version(release.stores, record).policy
    context = GateContext(release.stores, release.settings.artifact_root, policy)
    captures = context.captures(record.pipeline, stage=stage, since=since)
    return live_stats(captures, record.version, stage=stage)


def _unhealthy(
    stats: LiveStats, max_error_rate: float, max_p99_ms: float | None, min_requests: int
) -> str | None:
    if stats.requests < min_requests:
        return None
    if stats.error_rate > max_error_rate:
        return (
            f"error rate {stats.error_rate:.1%} over {stats.requests} requests"
            f" (at most {max_error_rate:.1%})"
        )
    if max_p99_ms is not None and stats.p99_ms is not None and stats.p99_ms > max_p99_ms:
        return f"p99 latency {stats.p99_ms:.1f} ms (at most {max_p99_ms:.1f} ms)"
    return None
