"""Retraining on drift or decay: when an alert of a kind in ``monitor.retrain.on`` opens, one
scheduler starts ``kiln run --trigger drift|performance --alert ID``.

The decision is the database's, so two schedulers never both start one: the retraining is a
schedule firing keyed (pipeline, due_at = the alert's ``opened_at``), claimed by inserting its
row under the pipeline's scheduling lock (:meth:`FireRepository.serialize`), after checking the
policy in the same transaction: no retraining of the pipeline claimed for an alert opened (nor
a drift or performance run started) within ``cooldown``, fewer than ``max_per_day`` since UTC
midnight.
An alert the policy refuses is recorded as a ``skipped`` firing with the reason, so it is
decided once and the reason can be read (`kiln scheduler --once` lists it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kiln.config.monitor import RetrainConfig
from kiln.stores.metadata.alerts import AlertRecord
from kiln.stores.metadata.records import FireRecord
from kiln.stores.metadata.store import UnitOfWork

__all__ = ["RetrainClaim", "claim_retrains", "retrain_args"]

_RETRAIN_TRIGGERS = ("drift", "performance")


@dataclass(frozen=True)
class RetrainClaim:
    alert: AlertRecord
    fire: FireRecord | None
    """The firing claimed to run; None when the policy refused it (``skipped``)."""
    skipped: str | None = None


def retrain_args(alert: AlertRecord) -> tuple[str, ...]:
    """The `kiln run` options of the retraining ``alert`` starts."""
    return ("--trigger", alert.kind, "--alert", str(alert.id))


def claim_retrains(  # noqa: PLR0917 (what a claim needs)
    uow: UnitOfWork,
    pipeline: str,
    policy: RetrainConfig,
    config_path: str,
    scheduler: str,
    now: datetime,
) -> list[RetrainClaim]:
    """Claim (or skip, with the reason) the retraining of each open alert of ``pipeline`` of a
    kind in ``policy.on`` that no scheduler has decided yet; at most one claimed per call."""
    if not policy.on:
        return []
    uow.fires.serialize(pipeline)
    waiting = sorted(
        (
            a for a in uow.alerts.list(pipeline, status=["open"], limit=1000)
            if a.kind in policy.on and a.opened_at is not None
        ),
        key=lambda a: (a.opened_at or now, a.id),
    )  # fmt: skip
    if not waiting or uow.fires.running(pipeline):
        return []  # a run of the pipeline is in flight: decide after it
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    claims: list[RetrainClaim] = []
    for alert in waiting:
        opened = alert.opened_at
        if opened is None:
            continue
        reason = _refused(uow, pipeline, policy, now, midnight)
        if reason is not None:
            note = f"retraining for alert #{alert.id} ({alert.check}) not started: {reason}"
            if uow.fires.skip(pipeline, opened, config_path, scheduler, note):
                claims.append(RetrainClaim(alert, None, note))
            continue
        fire = uow.fires.claim(pipeline, opened, config_path, scheduler)
        if fire is not None:
            claims.append(RetrainClaim(alert, fire))
            break  # one retraining at a time; the others are decided after it
    return claims


def _refused(
    uow: UnitOfWork, pipeline: str, policy: RetrainConfig, now: datetime, midnight: datetime
) -> str | None:
    """Why the policy refuses one more retraining now (None: it allows it)."""
    since = now - policy.cooldown
    fires = uow.fires.retrains_since(pipeline, min(since, midnight))
    runs = [
        r for r in uow.runs.list(pipeline, limit=200)
        if r.trigger in _RETRAIN_TRIGGERS and r.started_at >= min(since, midnight)
    ]  # fmt: skip
    recent = [f.due_at for f in fires if f.due_at >= since]
    recent += [r.started_at for r in runs if r.started_at >= since]
    if recent:
        return (
            f"one started {max(recent):%Y-%m-%d %H:%M} UTC, within monitor.retrain.cooldown"
            f" ({_duration(policy.cooldown)})"
        )
    today = max(
        sum(1 for f in fires if f.due_at >= midnight),
        sum(1 for r in runs if r.started_at >= midnight),
    )
    if today >= policy.max_per_day:
        return f"{today} started today (UTC), monitor.retrain.max_per_day is {policy.max_per_day}"
    return None


def _duration(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
