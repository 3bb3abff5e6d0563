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

``tick`` / ``tick_all`` (``kiln watch``, every pass of ``kiln scheduler``) is the watch pass of
:mod:`kiln.release.watch`; it returns what it did as typed events (:mod:`kiln.release.events`).
Every change goes through :class:`~kiln.registry.stages.Stages`: one transaction, a deployment
row and an audit event, actor ``kiln``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from kiln.executors import Usage
from kiln.gates.base import Gate, GateContext, GateResult
from kiln.gates.champion import ChampionChallengerGate
from kiln.gates.features import FeatureAvailabilityGate
from kiln.gates.quality import DataQualityGate
from kiln.gates.replay import ReplayGate
from kiln.gates.shadow import ShadowGate
from kiln.registry.stages import Stages, refuse_experiment
from kiln.registry.version import Version
from kiln.release import watch
from kiln.release.decision import SYSTEM_ACTOR, Decision, Recheck, run_gate
from kiln.release.events import ReleaseEvent
from kiln.settings import Settings
from kiln.stores import Stores
from kiln.stores.metadata.records import GateRecord, GateTrigger, VersionRecord

__all__ = ["Release"]


class Release:
    """Gates a version after its run and decides (:meth:`after_run`), re-checks it
    (:meth:`evaluate`), and watches live versions (:meth:`tick`)."""

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
        candidate, current = self.versions(pipeline, version)
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
        context = self.context(candidate)
        results = [run_gate(g, candidate, champion, context) for g in self.gates_for(candidate)]
        self.store(candidate, results, trigger=trigger, champion=champion)
        return results

    def challenge(self, pipeline: str, version: int) -> GateResult:
        """The champion/challenger evaluation of ``version`` against production, stored with
        its evidence; no other gate and no decision (what an experiment gets)."""
        candidate, champion = self.versions(pipeline, version)
        result = run_gate(ChampionChallengerGate(), candidate, champion, self.context(candidate))
        self.store(candidate, [result], trigger="run", champion=champion)
        return result

    def after_run(self, pipeline: str, version: int) -> Decision:
        """Gate a freshly registered version and act on the outcome."""
        candidate, champion = self.versions(pipeline, version)
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
            pending = ShadowGate().evaluate(candidate, champion, self.context(candidate))
            # measured as part of the run's release step: its own usage would count it twice
            pending = replace(pending, usage=Usage(0.0, 0.0, 0))
            self.store(candidate, [pending], trigger="watch", champion=champion)
            return Decision(
                pipeline,
                version,
                "shadow",
                f"gates passed; shadowing v{champion.number} until {pending.summary}",
                [*results, pending],
            )
        return self.advance(candidate, champion, results, "gates passed")

    def advance(
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
    def tick(self, pipeline: str) -> list[ReleaseEvent]:
        """One watch pass over ``pipeline`` (:func:`kiln.release.watch.tick`): one event per
        change it made."""
        return watch.tick(self, pipeline)

    def tick_all(self) -> list[ReleaseEvent]:
        with self.stores.metadata.read() as uow:
            names = [p.name for p in uow.pipelines.list()]
        return [event for name in names for event in self.tick(name)]

    # -- plumbing -----------------------------------------------------------------------------
    def versions(self, pipeline: str, version: int) -> tuple[Version, Version | None]:
        """``version`` loaded, and the production version it is judged against (None when
        there is none, or when it is ``version`` itself)."""
        with self.stores.metadata.read() as uow:
            record = uow.versions.get(pipeline, version)
            production = uow.versions.by_stage(pipeline, "production")
        candidate = Version(self.stores, record)
        champion = None
        if production and production[0].version != version:
            champion = Version(self.stores, production[0])
        return candidate, champion

    def context(self, candidate: Version) -> GateContext:
        """What the gates of ``candidate`` read: stores, artifacts, its policy, the clock."""
        return GateContext(
            self.stores, self.settings.artifact_root, candidate.policy, now=self.clock()
        )

    def store(
        self,
        candidate: Version,
        results: Sequence[GateResult],
        *,
        trigger: GateTrigger,
        champion: Version | None = None,
    ) -> None:
        """Append ``results`` to the gate history of ``candidate`` (never rewritten)."""
        with self.stores.metadata.unit_of_work() as uow:
            for r in results:
                u = r.usage
                uow.gates.record(
                    candidate.pipeline, candidate.number, r.gate, r.status, r.summary, r.evidence,
                    trigger=trigger, champion_version=champion.number if champion else None,
                    wall_seconds=None if u is None else u.wall_seconds,
                    cpu_seconds=None if u is None else u.cpu_seconds,
                    peak_memory_bytes=None if u is None else u.peak_memory_bytes,
                )  # fmt: skip

    def stored(self, record: VersionRecord) -> dict[str, str]:
        """The status of each gate that decided the fate of ``record`` (re-checks aside)."""
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
