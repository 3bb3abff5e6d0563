"""The release controller: after a run, gate the new version and decide; later, watch it.

``after_run`` runs the gates that need no live traffic (data quality, feature availability,
champion/challenger, replay), stores every result with its evidence, and then:

- any gate failed → the version is ``blocked`` (the run says why; only ``kiln override`` with
  an admin token and a reason lets it serve);
- the policy asks for a shadow period → the version shadows production, its shadow gate is
  ``pending`` until ``tick`` finds the period over;
- otherwise, with ``auto_promote``: the first version is promoted; a later one becomes a canary
  at ``canary_share`` (when set), or is promoted. Without ``auto_promote`` it waits for
  ``kiln promote``.

``tick`` (run by ``kiln watch`` and by every pass of ``kiln scheduler``) moves versions on:
a candidate whose run died before releasing it is gated and released now (kiln.gates.ungated); a
shadow whose period is over is judged on live traffic; a canary is promoted once its watch
window passed healthy, or blocked as soon as it is not; a production version promoted within
its watch window is rolled back automatically when its error rate or p99 latency passes the
thresholds. Every change goes through :class:`~kiln.registry.stages.Stages`: one transaction,
a deployment row and an audit event, actor ``kiln``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from kiln.errors import KilnError, NotFoundError
from kiln.gates.base import Gate, GateContext, GateResult, GateStatus
from kiln.gates.champion import ChampionChallengerGate
from kiln.gates.features import FeatureAvailabilityGate
from kiln.gates.live import LiveStats, live_stats
from kiln.gates.quality import DataQualityGate
from kiln.gates.replay import ReplayGate
from kiln.gates.shadow import ShadowGate
from kiln.gates.ungated import release_ungated
from kiln.registry.stages import Stages, refuse_experiment
from kiln.registry.version import Version
from kiln.settings import Settings
from kiln.stores import Stores
from kiln.stores.metadata.records import GateRecord, GateTrigger, Stage, VersionRecord

__all__ = ["SYSTEM_ACTOR", "Decision", "Recheck", "Release"]

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "kiln"
Outcome = Literal["promoted", "canary", "shadow", "blocked", "ready", "unchanged"]


@dataclass(frozen=True)
class Decision:
    pipeline: str
    version: int
    outcome: Outcome
    message: str
    results: list[GateResult] = field(default_factory=list)


@dataclass(frozen=True)
class Recheck:
    """What ``kiln gates check`` found: the new results, the champion they were judged against
    (None: none), and whether that champion is the one of the release decision."""

    results: list[GateResult]
    champion: int | None
    as_decided: bool


class Release:
    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.stages = Stages(stores.metadata)
        self.clock = clock

    # -- after a run --------------------------------------------------------------------------
    def gates_for(self, candidate: Version) -> list[Gate]:
        policy = candidate.policy.gates
        gates: list[Gate] = []
        if policy.data_quality.enabled:
            gates.append(DataQualityGate())
        if policy.feature_availability.enabled:
            gates.append(FeatureAvailabilityGate())
        if policy.champion_challenger.enabled:
            gates.append(ChampionChallengerGate())
        if policy.replay.enabled:
            gates.append(ReplayGate())
        return gates

    def evaluate(self, pipeline: str, version: int) -> Recheck:
        """Run the version's pre-traffic gates again (``kiln gates check``) and add their
        results to its history as ``recheck``; change no stage and no earlier result.

        The version is judged against the champion its release decision was made against
        (recorded with that decision; an archived version is loaded all the same), not against
        the version in production now -- which, for an overridden version, is itself."""
        candidate, current = self._versions(pipeline, version)
        with self.stores.metadata.read() as uow:
            decided = [g for g in uow.gates.for_version(pipeline, version) if g.trigger == "run"]
            champion_number = next(
                (g.champion_version for g in decided if g.champion_version is not None), None
            )
            record = uow.versions.get(pipeline, champion_number) if champion_number else None
        champion = current
        if decided:
            champion = Version(self.stores, record) if record is not None else None
        results = self._evaluate(candidate, champion, trigger="recheck")
        return Recheck(results, champion.number if champion else None, bool(decided))

    def _evaluate(
        self, candidate: Version, champion: Version | None, *, trigger: GateTrigger = "run"
    ) -> list[GateResult]:
        context = self._context(candidate)
        results = [_run_gate(g, candidate, champion, context) for g in self.gates_for(candidate)]
        self._store(candidate, results, trigger=trigger, champion=champion)
        return results

    def challenge(self, pipeline: str, version: int) -> GateResult:
        """The champion/challenger evaluation of ``version`` against production, stored with
        its evidence; no other gate and no decision (what an experiment gets)."""
        candidate, champion = self._versions(pipeline, version)
        result = _run_gate(ChampionChallengerGate(), candidate, champion, self._context(candidate))
        self._store(candidate, [result], trigger="run", champion=champion)
        return result

    def after_run(self, pipeline: str, version: int) -> Decision:
        """Gate a freshly registered version and act on the outcome."""
        candidate, champion = self._versions(pipeline, version)
        refuse_experiment(candidate.record, "released; `kiln run --experiment` only compares it")
        results = self._evaluate(candidate, champion)
        failed = [r for r in results if not r.ok]
        if failed:
            reason = "failed gates: " + "; ".join(f"{r.gate}: {r.summary}" for r in failed)
            self.stages.block(
                pipeline, version, actor=SYSTEM_ACTOR, reason=reason[:2000], only_from="candidate"
            )
            return Decision(pipeline, version, "blocked", reason, results)
        shadow = candidate.policy.shadow
        if champion is not None and (shadow.min_duration > timedelta(0) or shadow.min_requests):
            self.stages.set_shadow(
                pipeline, version, actor=SYSTEM_ACTOR, reason="gates passed; shadow period"
            )
            with self.stores.metadata.read() as uow:
                candidate = Version(self.stores, uow.versions.get(pipeline, version))  # shadow
            pending = ShadowGate().evaluate(candidate, champion, self._context(candidate))
            self._store(candidate, [pending], trigger="watch", champion=champion)
            return Decision(
                pipeline,
                version,
                "shadow",
                f"gates passed; shadowing v{champion.number} until {pending.summary}",
                [*results, pending],
            )
        return self._advance(candidate, champion, results, "gates passed")

    def _advance(
        self,
        candidate: Version,
        champion: Version | None,
        results: list[GateResult],
        why: str,
    ) -> Decision:
        """Promote or canary the candidate, if it is still where it was when it was judged."""
        pipeline, version = candidate.pipeline, candidate.number
        policy = candidate.policy
        was = candidate.record.stage
        if not policy.auto_promote:
            return Decision(
                pipeline,
                version,
                "ready",
                f"{why}; deploy.auto_promote is off: `kiln promote {pipeline} {version}`"
                " puts it in production",
                results,
            )
        if champion is None:
            change = self.stages.promote(
                pipeline, version, actor=SYSTEM_ACTOR, reason=f"{why}; first", only_from=was
            )
            if not change.changed:
                return _moved(candidate, change.stage, results)
            return Decision(pipeline, version, "promoted", f"{why}; first version", results)
        if policy.canary_share > 0:
            change = self.stages.set_canary(
                pipeline,
                version,
                policy.canary_share,
                actor=SYSTEM_ACTOR,
                reason=why,
                only_from=was,
            )
            if not change.changed:
                return _moved(candidate, change.stage, results)
            return Decision(
                pipeline,
                version,
                "canary",
                f"{why}; canary at {policy.canary_share:.0%} of traffic for"
                f" {policy.rollback.watch}",
                results,
            )
        change = self.stages.promote(
            pipeline, version, actor=SYSTEM_ACTOR, reason=why, only_from=was
        )
        if not change.changed:
            return _moved(candidate, change.stage, results)
        return Decision(
            pipeline, version, "promoted", f"{why}; v{champion.number} archived", results
        )

    # -- watching live versions ---------------------------------------------------------------
    def tick(self, pipeline: str) -> list[str]:
        """One pass over the pipeline's candidates that a dead run left ungated, its shadow,
        canary and new production version; returns what it did, one line per change."""
        events: list[str] = []
        try:  # a version whose run died between registering and releasing it
            events += release_ungated(self, pipeline)
        except KilnError as e:
            logger.warning("release of the ungated versions of %s: %s", pipeline, e)
        with self.stores.metadata.read() as uow:
            versions = uow.versions.list(pipeline)
        for record in versions:
            try:
                if record.stage == "shadow":
                    events += self._tick_shadow(record)
                elif record.stage == "canary":
                    events += self._tick_canary(record)
                elif record.stage == "production":
                    events += self._tick_production(record)
            except KilnError as e:
                logger.warning("release watch of %s v%s: %s", pipeline, record.version, e)
            except Exception:  # one bad capture file must not stop the watch of the others
                logger.exception("release watch of %s v%s failed", pipeline, record.version)
        return events

    def tick_all(self) -> list[str]:
        with self.stores.metadata.read() as uow:
            names = [p.name for p in uow.pipelines.list()]
        return [event for name in names for event in self.tick(name)]

    def _tick_shadow(self, record: VersionRecord) -> list[str]:
        if self._stored(record).get("shadow") != "pending":
            return []  # shadowed by hand, or already judged
        candidate, champion = self._versions(record.pipeline, record.version)
        result = _run_gate(ShadowGate(), candidate, champion, self._context(candidate))
        if result.status == "pending":
            self._store(candidate, [result], trigger="watch", champion=champion)
            return []
        # The stage changes first: if it fails, the gate is still pending and judged again.
        if not result.ok:
            return self._block(candidate, result, only_from="shadow", champion=champion)
        decision = self._advance(candidate, champion, [result], "shadow period passed")
        self._store(candidate, [result], trigger="watch", champion=champion)
        return [f"{record.pipeline} v{record.version} {decision.outcome}: {decision.message}"]

    def _tick_canary(self, record: VersionRecord) -> list[str]:
        candidate = Version(self.stores, record)
        policy = candidate.policy.rollback
        stats = self._live(record, "canary", since=record.stage_changed_at)
        problem = _unhealthy(stats, policy.max_error_rate, policy.max_p99_ms, policy.min_requests)
        over = self.clock() - record.stage_changed_at >= policy.watch
        if problem is None and not over:
            return []
        if problem is None and stats.requests < policy.min_requests:
            return []  # the window is over but too little traffic to judge: keep waiting
        status: GateStatus = "failed" if problem else "passed"
        summary = problem or (
            f"healthy for {policy.watch}: {stats.requests} requests,"
            f" error rate {stats.error_rate:.2%}, p99 {stats.p99_ms:.1f} ms"
        )
        result = GateResult("canary", status, summary, stats.as_evidence())
        if problem:
            return self._block(candidate, result, only_from="canary")
        change = self.stages.promote(
            record.pipeline,
            record.version,
            actor=SYSTEM_ACTOR,
            reason=f"canary: {summary}",
            only_from="canary",
        )
        self._store(candidate, [result], trigger="watch")
        if not change.changed:
            return []
        return [f"{record.pipeline} v{record.version} promoted: canary {summary}"]

    def _tick_production(self, record: VersionRecord) -> list[str]:
        version = Version(self.stores, record)
        policy = version.policy.rollback
        if self.clock() - record.stage_changed_at > policy.watch:
            return []
        if self._stored(record).get("live") == "failed":
            return []  # already judged (and the rollback refused): do not repeat every tick
        with self.stores.metadata.read() as uow:
            latest = uow.deployments.list(record.pipeline, limit=1)
        if not latest or latest[0].action != "promote" or latest[0].version != record.version:
            # Put back by a rollback: it served before, and rolling it back too would walk the
            # whole history back when the trouble is the traffic, not the versions.
            return []
        stats = self._live(record, "production", since=record.stage_changed_at)
        problem = _unhealthy(stats, policy.max_error_rate, policy.max_p99_ms, policy.min_requests)
        if problem is None:
            return []
        result = GateResult("live", "failed", problem, stats.as_evidence())
        reason = f"automatic rollback within the {policy.watch} watch window: {problem}"
        try:
            change = self.stages.rollback(
                record.pipeline, actor=SYSTEM_ACTOR, reason=reason, only_from=record.version
            )
        except NotFoundError as e:  # nothing to roll back to: say it once, not every tick
            self._store(version, [result], trigger="watch")
            return [f"{record.pipeline} v{record.version} is unhealthy ({problem}) but: {e}"]
        self._store(version, [result], trigger="watch")
        if not change.changed:
            return []  # another watcher rolled it back first
        return [f"{record.pipeline}: rolled back v{record.version} -> v{change.version}: {problem}"]

    def _block(
        self,
        candidate: Version,
        result: GateResult,
        *,
        only_from: Stage,
        champion: Version | None = None,
    ) -> list[str]:
        """Block a version that failed a live gate (if it is still in ``only_from``), then
        store the result: a failed stage change leaves the gate to be judged again."""
        what = f"{result.gate}: {result.summary}"
        change = self.stages.block(
            candidate.pipeline,
            candidate.number,
            actor=SYSTEM_ACTOR,
            reason=f"failed gates: {what}",
            only_from=only_from,
        )
        self._store(candidate, [result], trigger="watch", champion=champion)
        if not change.changed:
            return []
        return [f"{candidate.pipeline} v{candidate.number} blocked: {what}"]

    # -- plumbing -----------------------------------------------------------------------------
    def _versions(self, pipeline: str, version: int) -> tuple[Version, Version | None]:
        with self.stores.metadata.read() as uow:
            record = uow.versions.get(pipeline, version)
            production = uow.versions.by_stage(pipeline, "production")
        candidate = Version(self.stores, record)
        champion = None
        if production and production[0].version != version:
            champion = Version(self.stores, production[0])
        return candidate, champion

    def _context(self, candidate: Version) -> GateContext:
        return GateContext(
            self.stores, self.settings.artifact_root, candidate.policy, now=self.clock()
        )

    def _live(self, record: VersionRecord, stage: str, *, since: datetime) -> LiveStats:
        context = GateContext(
            self.stores, self.settings.artifact_root, Version(self.stores, record).policy
        )
        captures = context.captures(record.pipeline, stage=stage, since=since)
        return live_stats(captures, record.version, stage=stage)

    def _store(
        self,
        candidate: Version,
        results: Sequence[GateResult],
        *,
        trigger: GateTrigger,
        champion: Version | None = None,
    ) -> None:
        with self.stores.metadata.unit_of_work() as uow:
            for r in results:
                uow.gates.record(
                    candidate.pipeline, candidate.number, r.gate, r.status, r.summary, r.evidence,
                    trigger=trigger, champion_version=champion.number if champion else None,
                )  # fmt: skip

    def _stored(self, record: VersionRecord) -> dict[str, str]:
        with self.stores.metadata.read() as uow:
            found: list[GateRecord] = uow.gates.for_version(record.pipeline, record.version)
        return {g.gate: g.status for g in found}


def _moved(candidate: Version, stage: str, results: list[GateResult]) -> Decision:
    return Decision(
        candidate.pipeline,
        candidate.number,
        "unchanged",
        f"v{candidate.number} is {stage} now (changed meanwhile); nothing done",
        results,
    )


def _run_gate(
    gate: Gate, candidate: Version, champion: Version | None, context: GateContext
) -> GateResult:
    """A gate that cannot run fails the version, with the reason as its evidence."""
    try:
        return gate.evaluate(candidate, champion, context)
    except KilnError as e:
        return GateResult(gate.name, "failed", f"the gate could not run: {e}", {"error": str(e)})
    except Exception as e:  # a bug in a gate must block, not promote, and must be visible
        logger.exception("gate %s failed on %r", gate.name, candidate)
        return GateResult(
            gate.name,
            "failed",
            f"the gate crashed: {type(e).__name__}: {e}",
            {"error": f"{type(e).__name__}: {e}"},
        )


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
