"""Retraining on drift or decay: when an alert of a kind in ``monitor.retrain.on`` opens, one
scheduler starts ``kiln run --trigger drift|performance --alert ID``.

The decision is the database's, so two schedulers never both start one: the retraining is a
schedule firing keyed (pipeline, due_at = the alert's ``opened_at``), claimed by inserting its
row under the pipeline's scheduling lock (:meth:`FireRepository.serialize`), after checking the
policy in the same transaction: no retraining of the pipeline claimed for an alert opened (nor
a drift or performance run started) within ``cooldown``, fewer than ``max_per_day`` since UTC
midnight.
An alert the policy refuses is not recorded: the next pass decides it again, so an alert that
stays open is retrained once the cooldown has passed (or the next UTC day has come). The
claimed firing keeps the alert's kind as its trigger and the alert's id, so a retry or a
takeover (by this scheduler after a restart, or another one) runs the same `kiln run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kiln.config.monitor import RetrainConfig
from kiln.stores.metadata.alerts import AlertRecord
from kiln.stores.metadata.records import FireRecord
from kiln.stores.metadata.store import UnitOfWork

__all__ = ["RetrainClaim", "claim_retrains"]

_RETRAIN_TRIGGERS = ("drift", "performance")


@dataclass(frozen=True)
class RetrainClaim:
    alert: AlertRecord
    fire: FireRecord | None
    """The firing claimed to run; None when the policy refused it (nothing is recorded)."""
    skipped: str | None = None
    """Why the policy refused it."""


def claim_retrains(  # noqa: PLR0917 (what a claim needs)
    uow: UnitOfWork,
    pipeline: str,
    policy: RetrainConfig,
    config_path: str,
    scheduler: str,
    now: datetime,
) -> list[RetrainClaim]:
    """Claim the retraining of the oldest open alert of ``pipeline`` of a kind in
    ``policy.on`` that has no firing yet; or say why the policy refuses it now (recording
    nothing). At most one claim per call: the other alerts are decided after its run."""
    if not policy.on:
        return []
    uow.fires.serialize(pipeline)
    waiting = sorted(
        (a.opened_at, a.id, a) for a in uow.alerts.list(pipeline, status=["open"], limit=1000)
        if a.kind in policy.on and a.opened_at is not None
    )  # fmt: skip
    if not waiting or uow.fires.running(pipeline):
        return []  # a run of the pipeline is in flight: decide after it
    decided = uow.fires.decided(pipeline, [opened for opened, _, _ in waiting])
    undecided = [(opened, alert) for opened, _, alert in waiting if opened not in decided]
    if not undecided:
        return []
    opened, alert = undecided[0]
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    reason = _refused(uow, pipeline, policy, now, midnight)
    if reason is not None:
        more = f" (and {len(undecided) - 1} more open alert(s))" if len(undecided) > 1 else ""
        note = f"retraining for alert #{alert.id} ({alert.check}){more} not started: {reason}"
        return [RetrainClaim(alert, None, note)]
    fire = uow.fires.claim(
        pipeline, opened, config_path, scheduler, trigger=alert.kind, alert_id=alert.id
    )
    return [] if fire is None else [RetrainClaim(alert, fire)]


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
