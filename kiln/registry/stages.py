"""Stages of model versions: promote, roll back, shadow. Each change is one transaction.

A version is a candidate, shadow, canary, production, archived or blocked. A pipeline has at
most one production version (the database refuses a second one: a partial unique index), at
most one canary, and any number of shadow versions. Every change writes, in the same
transaction as the stage changes, one row of the deployment history and one audit event, so
that what served when, who changed it and why can never disagree with the stages. Callers
check the admin token first (``check_admin``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kiln.errors import KilnError, NotFoundError
from kiln.stores import MetadataStore, UnitOfWork, VersionRecord
from kiln.stores.metadata import DeploymentRecord
from kiln.stores.metadata.records import DeploymentAction, Stage

__all__ = ["StageError", "Stages", "Transition", "previous_production", "refuse_experiment"]


class StageError(KilnError):
    """A stage change that is refused: promoting a blocked version, shadowing production."""

    exit_code = 2
    code = "stage_refused"


@dataclass(frozen=True, slots=True)
class Transition:
    """What one command changed. ``from_version`` is the production version that a promote
    or rollback replaced (and archived); ``changed`` is False for a no-op."""

    pipeline: str
    action: DeploymentAction
    version: int
    stage: Stage
    previous_stage: Stage
    from_version: int | None = None
    changed: bool = True

    def __str__(self) -> str:
        head = f"{self.pipeline}: v{self.version}"
        if not self.changed:
            return f"{head} is {self.stage}; nothing changed"
        if self.action in ("promote", "rollback"):
            archived = f" (v{self.from_version} archived)" if self.from_version else ""
            return f"{head} -> {self.stage}{archived}"
        return f"{head} -> {self.stage} (was {self.previous_stage})"


def previous_production(history: Sequence[DeploymentRecord], current: int) -> int | None:
    """The version that served before ``current``, from the deployment history (newest first).

    Promotions and rollbacks are replayed as a stack: a promotion pushes its version, a
    rollback pops the current one. So a rollback undoes the latest promotion, and a second
    rollback the one before it: it never returns to the version just rolled back from.
    None when nothing served before, or when the history cannot tell (production was changed
    outside it).
    """
    stack: list[int] = []
    for event in reversed(history):
        if event.action == "promote":
            if event.from_version is None:
                stack = []
            elif not stack or stack[-1] != event.from_version:
                stack = [event.from_version]  # it served, but the history does not say after what
            stack.append(event.version)
        elif event.action == "rollback":
            if stack and stack[-1] == event.from_version:
                stack.pop()
            if not stack or stack[-1] != event.version:
                stack = [event.version]  # the history does not say what served before it
    if len(stack) < 2 or stack[-1] != current:
        return None
    return stack[-2]


def _blocked(pipeline: str, version: int) -> StageError:
    return StageError(
        f"version {version} of pipeline {pipeline!r} is blocked: it failed its gates",
        hint=f"`kiln models show {pipeline} {version}` shows it; a blocked version needs"
        f" `kiln override {pipeline} {version} --reason TEXT` before it can serve",
    )


def refuse_experiment(target: VersionRecord, action: str) -> None:
    """An experiment version never takes traffic: it exists to be compared."""
    if target.experiment is None:
        return
    raise StageError(
        f"version {target.version} of pipeline {target.pipeline!r} is an experiment"
        f" ({target.experiment!r}); an experiment cannot be {action}",
        hint=f"`kiln compare {target.pipeline} production {target.version}` shows it beside"
        " production; to deploy the idea, re-run without --experiment (`kiln run kiln.yaml`)",
    )


class Stages:
    """The stage service over a metadata store; it does not check tokens."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata

    def production(self, pipeline: str) -> VersionRecord | None:
        with self._metadata.read() as uow:
            return _production(uow, pipeline)

    def shadows(self, pipeline: str) -> list[VersionRecord]:
        with self._metadata.read() as uow:
            return uow.versions.by_stage(pipeline, "shadow")

    def promote(
        self,
        pipeline: str,
        version: int,
        *,
        actor: str,
        reason: str | None = None,
        only_from: Stage | None = None,
    ) -> Transition:
        """Make ``version`` the production version; the previous one is archived.

        Any version but a blocked one can be promoted, an archived one too: that is how an
        admin puts back any earlier version directly. ``only_from``: only if the version is
        still in that stage (a no-op otherwise) — an automatic decision taken on what was read
        a moment ago must not undo a change made since.
        """
        with self._metadata.unit_of_work() as uow:
            target = _locked_version(uow, pipeline, version)
            if only_from is not None and target.stage != only_from:
                return _unchanged(pipeline, "promote", target)
            current = _production(uow, pipeline)
            if current is not None and current.version == version:
                return Transition(
                    pipeline, "promote", version, "production", "production", changed=False
                )
            refuse_experiment(target, "promoted")
            if target.stage == "blocked":
                raise _blocked(pipeline, version)
            from_version = None if current is None else current.version
            if from_version is not None:
                uow.versions.set_stage(pipeline, from_version, "archived")
            uow.versions.set_stage(pipeline, version, "production")
            change = Transition(
                pipeline, "promote", version, "production", target.stage, from_version
            )
            _record(uow, change, actor, reason)
        return change

    def rollback(
        self,
        pipeline: str,
        *,
        actor: str,
        reason: str | None = None,
        only_from: int | None = None,
    ) -> Transition:
        """Put back the version that served before the current one; the current is archived.

        ``only_from``: roll back only if that version is still the production one (a no-op
        otherwise), so that two watchers judging the same bad version roll back once, not twice.
        """
        with self._metadata.unit_of_work() as uow:
            try:
                uow.pipelines.lock(pipeline)
            except NotFoundError:
                raise _nothing_to_roll_back(pipeline, "it has no registered version") from None
            current = _production(uow, pipeline)
            if only_from is not None and (current is None or current.version != only_from):
                stage = uow.versions.get(pipeline, only_from).stage
                return Transition(pipeline, "rollback", only_from, stage, stage, changed=False)
            if current is None:
                raise _nothing_to_roll_back(pipeline, "it has no production version")
            history = uow.deployments.list(pipeline, limit=None)
            version = previous_production(history, current.version)
            if version is None:
                raise _nothing_to_roll_back(
                    pipeline, f"v{current.version} is the first version it served"
                )
            target = uow.versions.get(pipeline, version)
            if target.stage == "blocked":
                raise _blocked(pipeline, version)
            uow.versions.set_stage(pipeline, current.version, "archived")
            uow.versions.set_stage(pipeline, version, "production")
            change = Transition(
                pipeline, "rollback", version, "production", target.stage, current.version
            )
            _record(uow, change, actor, reason)
        return change

    def override(self, pipeline: str, version: int, *, actor: str, reason: str) -> Transition:
        """Promote a blocked version anyway: an admin's decision, audited with its reason."""
        if not reason.strip():
            raise StageError(
                f"overriding the gates of version {version} of {pipeline!r} needs a reason",
                hint='pass --reason "why this version may serve despite its gates"',
            )
        with self._metadata.unit_of_work() as uow:
            target = _locked_version(uow, pipeline, version)
            refuse_experiment(target, "promoted, even by an override")
            if target.stage != "blocked":
                raise StageError(
                    f"version {version} of pipeline {pipeline!r} is {target.stage}, not blocked;"
                    " there is nothing to override",
                    hint=f"`kiln promote {pipeline} {version}` promotes a version that is not"
                    " blocked",
                )
            current = _production(uow, pipeline)
            from_version = None if current is None else current.version
            if from_version is not None:
                uow.versions.set_stage(pipeline, from_version, "archived")
            uow.versions.set_stage(pipeline, version, "production")
            change = Transition(pipeline, "promote", version, "production", "blocked", from_version)
            _record(uow, change, actor, reason, audit_action="override")
        return change

    def block(
        self,
        pipeline: str,
        version: int,
        *,
        actor: str,
        reason: str,
        only_from: Stage | None = None,
    ) -> Transition:
        """Stop a version from taking traffic: it failed a gate (``reason`` says which).
        ``only_from``: only if the version is still in that stage (a no-op otherwise)."""
        with self._metadata.unit_of_work() as uow:
            target = _locked_version(uow, pipeline, version)
            if only_from is not None and target.stage != only_from:
                return _unchanged(pipeline, "block", target)
            if target.stage == "blocked":
                return Transition(pipeline, "block", version, "blocked", "blocked", changed=False)
            if target.stage == "production":
                raise StageError(
                    f"version {version} of pipeline {pipeline!r} is the production version;"
                    " it cannot be blocked while it serves",
                    hint=f"`kiln rollback {pipeline}` takes it out of production",
                )
            uow.versions.set_stage(pipeline, version, "blocked")
            change = Transition(pipeline, "block", version, "blocked", target.stage)
            _record(uow, change, actor, reason)
        return change

    def set_canary(
        self,
        pipeline: str,
        version: int,
        share: float,
        *,
        actor: str,
        reason: str | None = None,
        only_from: Stage | None = None,
    ) -> Transition:
        """Let ``version`` answer ``share`` of the live requests beside production.
        ``only_from``: only if the version is still in that stage (a no-op otherwise)."""
        if not 0 < share < 1:
            raise StageError(
                f"a canary share must be between 0 and 1 (exclusive), got {share}",
                hint="set deploy.canary_share in kiln.yaml, e.g. 0.1",
            )
        with self._metadata.unit_of_work() as uow:
            target = _locked_version(uow, pipeline, version)
            if only_from is not None and target.stage != only_from:
                return _unchanged(pipeline, "canary", target)
            refuse_experiment(target, "a canary")
            if target.stage in ("production", "blocked"):
                raise StageError(
                    f"version {version} of pipeline {pipeline!r} is {target.stage};"
                    " only a candidate or shadow version can become a canary",
                    hint=f"`kiln models list {pipeline}` shows the stages",
                )
            if _production(uow, pipeline) is None:
                raise StageError(
                    f"pipeline {pipeline!r} has no production version to share traffic with",
                    hint=f"`kiln promote {pipeline} {version}` makes it the first one",
                )
            for other in uow.versions.by_stage(pipeline, "canary"):
                if other.version != version:
                    uow.versions.set_stage(pipeline, other.version, "candidate")
            uow.versions.set_stage(pipeline, version, "canary", traffic_share=share)
            change = Transition(pipeline, "canary", version, "canary", target.stage)
            _record(uow, change, actor, reason)
        return change

    def set_shadow(
        self, pipeline: str, version: int, *, actor: str, reason: str | None = None
    ) -> Transition:
        """Serve ``version`` in shadow: it sees production traffic, its answers are not used."""
        with self._metadata.unit_of_work() as uow:
            target = _locked_version(uow, pipeline, version)
            refuse_experiment(target, "served in shadow")
            if target.stage == "shadow":
                return Transition(pipeline, "shadow", version, "shadow", "shadow", changed=False)
            if target.stage == "production":
                raise StageError(
                    f"version {version} of pipeline {pipeline!r} is the production version;"
                    " it cannot shadow itself",
                    hint=f"promote another version first (`kiln promote {pipeline} VERSION`)",
                )
            if target.stage == "blocked":
                raise _blocked(pipeline, version)
            uow.versions.set_stage(pipeline, version, "shadow")
            change = Transition(pipeline, "shadow", version, "shadow", target.stage)
            _record(uow, change, actor, reason)
        return change

    def unshadow(
        self, pipeline: str, version: int, *, actor: str, reason: str | None = None
    ) -> Transition:
        """Stop shadowing ``version``; it is a candidate again. A no-op unless in shadow."""
        with self._metadata.unit_of_work() as uow:
            target = _locked_version(uow, pipeline, version)
            if target.stage != "shadow":
                return Transition(
                    pipeline, "unshadow", version, target.stage, target.stage, changed=False
                )
            uow.versions.set_stage(pipeline, version, "candidate")
            change = Transition(pipeline, "unshadow", version, "candidate", "shadow")
            _record(uow, change, actor, reason)
        return change


def _unchanged(pipeline: str, action: DeploymentAction, target: VersionRecord) -> Transition:
    return Transition(pipeline, action, target.version, target.stage, target.stage, changed=False)


def _production(uow: UnitOfWork, pipeline: str) -> VersionRecord | None:
    found = uow.versions.by_stage(pipeline, "production")
    return found[0] if found else None


def _locked_version(uow: UnitOfWork, pipeline: str, version: int) -> VersionRecord:
    """Take the pipeline's stage lock, then read the version as it is now."""
    try:
        uow.pipelines.lock(pipeline)
    except NotFoundError:
        raise NotFoundError(
            f"no version {version} of pipeline {pipeline!r}: the pipeline has no versions",
            hint="`kiln models list` shows the versions",
        ) from None
    return uow.versions.get(pipeline, version)


def _nothing_to_roll_back(pipeline: str, why: str) -> NotFoundError:
    return NotFoundError(
        f"no earlier production version of {pipeline!r} to roll back to: {why}",
        hint=f"`kiln promote {pipeline} VERSION` puts any version in production;"
        " `kiln models list` shows them",
    )


def _record(
    uow: UnitOfWork,
    change: Transition,
    actor: str,
    reason: str | None,
    *,
    audit_action: str | None = None,
) -> None:
    deployment = uow.deployments.record(
        change.pipeline,
        change.version,
        change.action,
        actor=actor,
        from_version=change.from_version,
        reason=reason,
    )
    uow.audit.record(
        actor,
        audit_action or change.action,
        change.pipeline,
        change.version,
        reason,
        {
            "from_version": change.from_version,
            "to_version": change.version,
            "from_stage": change.previous_stage,
            "to_stage": change.stage,
            "deployment_id": deployment.id,
        },
    )
