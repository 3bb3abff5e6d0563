"""The UI's writes: one function per action, each the same code as its CLI command.

Every action looks the pipeline up (a NotFoundError naming it), checks that the principal may
change it (``authorize``: admins all, owners their own, viewers nothing), then calls what the
CLI calls (``Stages`` for stage changes, ``uow.alerts.ack`` for an acknowledgement, a child
`kiln run` for a run) with the principal's name as the actor, so the audit log names the person.

A stage change decided on a page that is no longer current is refused, not applied: the form
carries the stage the page showed (``expected_stage``), and the change is a compare-and-set
where ``Stages`` offers one (``only_from``). Such a refusal is an ``ActionConflict`` (409).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import KilnError, NotFoundError
from kiln.registry.liveness import shown_status
from kiln.registry.people import Principal, authorize
from kiln.registry.stages import StageError, Stages, Transition
from kiln.settings import Settings
from kiln.stores import Stores
from kiln.stores.metadata.records import PipelineRecord, Stage
from kiln.stores.metadata.tables import STAGES
from kiln.ui._runs import live_lock, run_of, spawn

__all__ = [
    "ACTIONS",
    "MAX_REASON",
    "ActionConflict",
    "ActionInputError",
    "Outcome",
    "ack",
    "change_stage",
    "do",
    "expected",
    "resume",
    "rollback",
    "run",
]

ACTIONS = ("promote", "rollback", "override", "block", "shadow", "unshadow", "run", "resume")
"""The actions on a pipeline (``ack`` is on an alert)."""
MAX_REASON = 4000
"""The longest reason or note kept (characters)."""
_RUN_ID_WAIT = 3.0
"""How long a started run is looked for before answering that it is starting (seconds)."""


class ActionConflict(StageError):
    """The page was out of date (the stage changed meanwhile), or a live run holds the lock."""

    code = "conflict"


class ActionInputError(KilnError):
    """An action's input that cannot be used (a reason too long, a missing version)."""

    code = "bad_input"


@dataclass(frozen=True)
class Outcome:
    """What an action did: ``message`` is shown as the flash or in the JSON answer."""

    changed: bool
    message: str
    pipeline: str
    action: str
    version: int | None = None
    stage: str | None = None
    run_id: str | None = None


# -- checks shared by every action -------------------------------------------------------------


def _pipeline(stores: Stores, name: str) -> PipelineRecord:
    with stores.metadata.read() as uow:
        return uow.pipelines.get(name)


def _allowed(stores: Stores, who: Principal, action: str, name: str) -> PipelineRecord:
    found = _pipeline(stores, name)
    authorize(who, "shadow" if action == "unshadow" else action, name, found.owner)
    return found


def _text(value: str | None, what: str, name: str) -> str | None:
    """A reason or note: blank is None; longer than MAX_REASON is refused."""
    if value is None or not value.strip():
        return None
    if len(value) > MAX_REASON:
        raise ActionInputError(
            f"the {what} for {name!r} is {len(value):,} characters; at most {MAX_REASON:,} are"
            " kept",
            hint=f"shorten the {what} (link to a longer write-up instead)",
        )
    return value.strip()


def _required(reason: str | None, action: str, name: str, version: int) -> str:
    text = _text(reason, "reason", name)
    if text is None:
        done = "overridden" if action == "override" else "blocked"
        raise StageError(
            f"{action} of {name} v{version} needs a reason: it is kept in the audit log",
            hint=f"write why v{version} should be {done} in the reason field",
        )
    return text


def _need_version(version: int | None, action: str, name: str) -> int:
    if version is None:
        raise ActionInputError(
            f"{action} of {name!r} needs a version number",
            hint="give `version` (the version list of the pipeline page shows them)",
        )
    return version


def expected(stage: str | None) -> Stage | None:
    """The stage a form says its page showed (blank: none), checked against the stages."""
    if stage is None or not stage.strip():
        return None
    for known in STAGES:
        if stage.strip() == known:
            return known  # type: ignore[return-value]
    raise ActionInputError(
        f"expected_stage {stage[:40]!r} is not a stage", hint=f"one of {', '.join(STAGES)}"
    )


def _stage_now(stores: Stores, name: str, version: int) -> str:
    with stores.metadata.read() as uow:
        return uow.versions.get(name, version).stage


def _race(name: str, version: int, now: str) -> ActionConflict:
    return ActionConflict(
        f"the stage of {name} v{version} changed meanwhile (it is now {now});"
        " the page shows it now",
        hint="look at the version again and decide on what it is now",
    )


def _check_expected(stores: Stores, name: str, version: int, expected: str | None) -> None:
    if expected is not None and (now := _stage_now(stores, name, version)) != expected:
        raise _race(name, version, now)


def _guarded(
    stores: Stores, name: str, version: int, expected: str | None, change: Transition
) -> Transition:
    """A no-op of a compare-and-set whose stage was not the expected one is a lost race."""
    if not change.changed and expected is not None:
        now = _stage_now(stores, name, version)
        if now != expected:
            raise _race(name, version, now)
    return change


def _raced_or(stores: Stores, name: str, version: int, expected: str | None, e: StageError) -> None:
    """Stages refused: a lost race when the version is no longer what the page showed."""
    if expected is None:
        return
    try:
        now = _stage_now(stores, name, version)
    except NotFoundError:
        return
    if now != expected:
        raise _race(name, version, now) from e


def _outcome(change: Transition, action: str) -> Outcome:
    return Outcome(
        change.changed, str(change), change.pipeline, action, change.version, change.stage
    )


# -- stage changes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _StageChange:
    """How one stage change is made: ``apply`` (stages, pipeline, version, actor, reason,
    only_from), whether it needs a reason, and how a page out of date is found: before the
    change where ``Stages`` offers no compare-and-set (``checked_first``), as a no-op from a
    stage the page did not show otherwise; ``refused_from``: the stage a refused change
    assumes the page showed when it said none."""

    apply: Callable[[Stages, str, int, str, str | None, Stage | None], Transition]
    reason_required: bool = False
    checked_first: bool = False
    refused_from: str | None = None


_STAGE_CHANGES = {
    # `kiln promote NAME VERSION`: VERSION serves; the previous production is archived
    "promote": _StageChange(lambda s, name, v, actor, why, only: s.promote(
        name, v, actor=actor, reason=why, only_from=only)),
    # `kiln override NAME VERSION --reason`: a blocked version serves despite its gates
    "override": _StageChange(lambda s, name, v, actor, why, _: s.override(
        name, v, actor=actor, reason=why or ""),
        reason_required=True, checked_first=True, refused_from="blocked"),
    # blocked by hand: no traffic until an override
    "block": _StageChange(lambda s, name, v, actor, why, only: s.block(
        name, v, actor=actor, reason=why or "", only_from=only), reason_required=True),
    # `kiln shadow NAME VERSION`: VERSION sees production traffic, its answers unused
    "shadow": _StageChange(lambda s, name, v, actor, why, _: s.set_shadow(
        name, v, actor=actor, reason=why), checked_first=True),
    # `kiln shadow NAME VERSION --off`: a candidate again
    "unshadow": _StageChange(lambda s, name, v, actor, why, _: s.unshadow(
        name, v, actor=actor, reason=why)),
}  # fmt: skip


def change_stage(
    stores: Stores,
    who: Principal,
    name: str,
    action: str,
    *,
    version: int | None,
    reason: str | None = None,
    expected_stage: str | None = None,
) -> Outcome:
    """Promote, override (reason required), block (reason required), shadow or unshadow
    ``version`` of ``name`` as the CLI does; a page out of date is an ActionConflict."""
    how = _STAGE_CHANGES[action]
    _allowed(stores, who, action, name)
    number = _need_version(version, action, name)
    if how.reason_required:
        text: str | None = _required(reason, action, name, number)
    else:
        text = _text(reason, "reason", name)
    if how.checked_first:
        _check_expected(stores, name, number, expected_stage)
    only_from = None if how.checked_first else expected(expected_stage)
    try:
        change = how.apply(Stages(stores.metadata), name, number, who.name, text, only_from)
    except StageError as e:
        _raced_or(stores, name, number, expected_stage or how.refused_from, e)
        raise
    if not how.checked_first:
        change = _guarded(stores, name, number, expected_stage, change)
    return _outcome(change, action)


def rollback(
    stores: Stores,
    who: Principal,
    name: str,
    *,
    version: int | None = None,
    reason: str | None = None,
) -> Outcome:
    """`kiln rollback NAME`: the version that served before the current one serves again.
    ``version``: the production version the page showed (a no-op race otherwise)."""
    _allowed(stores, who, "rollback", name)
    text = _text(reason, "reason", name)
    change = Stages(stores.metadata).rollback(name, actor=who.name, reason=text, only_from=version)
    if version is not None and not change.changed:
        raise _race(name, version, change.stage)
    return _outcome(change, "rollback")


# -- runs --------------------------------------------------------------------------------------


def _refuse_if_locked(stores: Stores, name: str) -> None:
    with stores.metadata.read() as uow:
        lock = uow.locks.get(name)
    if lock is not None and live_lock(lock):
        raise ActionConflict(
            f"pipeline {name!r} is running: run {lock.run_id} holds its lock"
            f" (pid {lock.pid} on {lock.host})",
            hint="wait for it to finish; its run page shows how far it is",
        )


def run(
    stores: Stores, settings: Settings, who: Principal, name: str, *, wait: float = _RUN_ID_WAIT
) -> Outcome:
    """`kiln run CONFIG --trigger manual` in a detached child process; refused (409) while a
    live run holds the pipeline's lock."""
    found = _allowed(stores, who, "run", name)
    _refuse_if_locked(stores, name)
    config = Path(found.config_path)
    if not config.is_file():
        raise ActionInputError(
            f"the kiln.yaml of {name!r} is not at {found.config_path} on this host",
            hint=f"run `kiln run {found.config_path}` where the file is",
        )
    pid, log = spawn(settings, name, ["run", str(config), "--trigger", "manual"], who.name)
    with stores.metadata.unit_of_work() as uow:
        uow.audit.record(
            who.name,
            "run.start",
            name,
            details={"pid": pid, "config": str(config), "log": str(log)},
        )
    run_id = run_of(stores, name, pid, wait)
    said = f"run {run_id} of {name} started" if run_id else f"a run of {name} is starting"
    return Outcome(True, f"{said} (pid {pid}; log {log})", name, "run", run_id=run_id)


def resume(
    stores: Stores,
    settings: Settings,
    who: Principal,
    name: str,
    run_id: str | None,
    *,
    wait: float = _RUN_ID_WAIT,
) -> Outcome:
    """`kiln run --resume RUN` in a detached child process: RUN must be a failed or interrupted
    run of this pipeline, and no other live run may hold the lock."""
    _allowed(stores, who, "resume", name)
    if not run_id or not run_id.strip():
        raise ActionInputError(
            f"resume of {name!r} needs a run id",
            hint="the pipeline page offers its last interrupted run",
        )
    run_id = run_id.strip()
    with stores.metadata.read() as uow:
        found = uow.runs.get(run_id)
        status = shown_status(found, uow.locks.get(found.pipeline))
    if found.pipeline != name:
        raise NotFoundError(
            f"run {run_id!r} is a run of {found.pipeline!r}, not of {name!r}",
            hint=f"resume it from the page of {found.pipeline!r}",
        )
    if status not in ("failed", "interrupted"):
        raise ActionConflict(
            f"run {run_id} of {name} is {status}: only a failed or interrupted run resumes",
            hint="start a new run instead",
        )
    _refuse_if_locked(stores, name)
    pid, log = spawn(settings, name, ["run", "--resume", run_id], who.name)
    with stores.metadata.unit_of_work() as uow:
        uow.audit.record(
            who.name, "run.resume", name, details={"run_id": run_id, "pid": pid, "log": str(log)}
        )
    return Outcome(True, f"run {run_id} of {name} is resuming (pid {pid}; log {log})", name,
                   "resume", run_id=run_id)  # fmt: skip


# -- alerts ------------------------------------------------------------------------------------


def ack(stores: Stores, who: Principal, alert_id: int, note: str | None = None) -> Outcome:
    """`kiln alerts ack ID --note`: ``who`` has seen the alert (audited with the note)."""
    with stores.metadata.read() as uow:
        found = uow.alerts.get(alert_id)
    _allowed(stores, who, "ack", found.pipeline)
    text = _text(note, "note", found.pipeline)
    with stores.metadata.unit_of_work() as uow:
        acked = uow.alerts.ack(alert_id, who.name, text)
    what = f"alert {acked.id} ({acked.pipeline} {acked.check}, {acked.level})"
    return Outcome(True, f"{what} acknowledged by {who.name}", acked.pipeline, "ack")


# -- one entry point for the routes ------------------------------------------------------------


def do(
    stores: Stores,
    settings: Settings,
    who: Principal,
    name: str,
    action: str,
    *,
    version: int | None = None,
    reason: str | None = None,
    run_id: str | None = None,
    expected_stage: str | None = None,
) -> Outcome:
    """Dispatch ``action`` on pipeline ``name`` (one of ACTIONS; NotFoundError otherwise)."""
    expected_stage = expected(expected_stage)
    if action == "run":
        return run(stores, settings, who, name)
    if action == "resume":
        return resume(stores, settings, who, name, run_id)
    if action == "rollback":
        return rollback(stores, who, name, version=version, reason=reason)
    if action not in _STAGE_CHANGES:
        raise NotFoundError(
            f"no action {action!r}", hint=f"the actions are {', '.join(ACTIONS)} (and ack)"
        )
    return change_stage(stores, who, name, action, version=version, reason=reason,
                        expected_stage=expected_stage)  # fmt: skip
