"""Alert episodes and their notification outbox.

An episode is one stretch of windows in which a check of a pipeline stays over a threshold.
The partial unique index ``ux_alerts_one_episode`` lets a check have one live (pending or open)
episode at most, so two monitors judging the same window cannot both start one: the loser's
insert fails in a savepoint and it reads the winner's row. Every later change is an UPDATE
conditional on what was read (compare-and-set, as stages and schedule firings do): a window
older than or equal to the episode's ``last_window`` changes nothing, so a window seen twice, by
one monitor or two, counts once.

Deliveries are the outbox: one row per (alert, event, channel), written in the same transaction
as the change that causes it, claimed before sending so that two senders never send it twice,
and kept pending with a later ``next_attempt_at`` when the channel fails: never lost.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kiln.errors import NotFoundError
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import Repository, check_aware, check_choice, to_record
from kiln.stores.metadata.base import now as _now
from kiln.stores.metadata.repositories import AuditRepository

__all__ = [
    "MAX_BACKOFF",
    "AlertLevel",
    "AlertRecord",
    "AlertRepository",
    "AlertStatus",
    "DeliveryRecord",
    "DeliveryStatus",
    "OpenCount",
    "backoff",
]

AlertLevel = Literal["warn", "alert"]
AlertStatus = Literal["pending", "open", "resolved"]
DeliveryEvent = Literal["opened", "resolved"]
DeliveryStatus = Literal["pending", "delivered", "failed"]

FIRST_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=1)
ACK_ACTION = "ack_alert"


def backoff(attempts: int) -> timedelta:
    """How long a delivery that failed ``attempts`` times waits: 30 s, doubled per failure,
    at most an hour (a channel down for a day is tried every hour, never given up)."""
    return min(FIRST_BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: int
    pipeline: str
    check: str
    kind: str
    level: AlertLevel
    """The level of the latest window over a threshold."""
    status: AlertStatus
    streak: int
    opened_at: datetime | None
    resolved_at: datetime | None
    first_window: datetime
    last_window: datetime
    """The start of the latest window that changed the episode (the resolving one, once
    resolved)."""
    value: float | None
    threshold: float | None
    message: str
    details: dict[str, Any]
    notified_at: datetime | None
    acked_by: str | None
    acked_at: datetime | None
    ack_note: str | None

    @property
    def live(self) -> bool:
        return self.status in ("pending", "open")


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    alert_id: int
    event: DeliveryEvent
    channel: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class OpenCount:
    pipeline: str
    kind: str
    level: str
    count: int


class AlertRepository(Repository):
    _table = t.table_of(t.Alert)
    _outbox = t.table_of(t.AlertDelivery)

    # -- episodes ------------------------------------------------------------------------------

    def live(self, pipeline: str, check: str) -> AlertRecord | None:
        """The pending or open episode of ``check``, if any (there is one at most)."""
        c = self._table.c
        return self._one(
            sa.select(self._table).where(
                c.pipeline == pipeline, c.check == check, c.status.in_(("pending", "open"))
            )
        )

    def latest(self, pipeline: str, check: str) -> AlertRecord | None:
        """The episode of ``check`` that saw the latest window, whatever its status."""
        c = self._table.c
        return self._one(
            sa.select(self._table)
            .where(c.pipeline == pipeline, c.check == check)
            .order_by(c.last_window.desc(), c.id.desc())
            .limit(1)
        )

    def start(  # noqa: PLR0917 (one value per column of a new episode)
        self,
        pipeline: str,
        check: str,
        kind: str,
        level: AlertLevel,
        window: datetime,
        value: float | None,
        threshold: float | None,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> AlertRecord | None:
        """Start a pending episode of ``check`` at ``window`` (streak 1); None when the check
        has a live episode already (another monitor started it first: read it with ``live``)."""
        check_choice("kind", kind, t.ALERT_KINDS)
        check_choice("level", level, t.ALERT_LEVELS)
        check_aware("window", window)
        values = {
            "pipeline": pipeline, "check": check, "kind": kind, "level": level,
            "status": "pending", "streak": 1, "first_window": window, "last_window": window,
            "value": value, "threshold": threshold, "message": message, "details": details or {},
        }  # fmt: skip
        try:
            # A savepoint: the loser's duplicate key must not abort a PostgreSQL transaction.
            with self._session.begin_nested():
                row = self._session.execute(
                    sa.insert(self._table).values(**values).returning(*self._table.c)
                ).one()
        except sa_exc.IntegrityError:
            if self.live(pipeline, check) is None:  # not the one-episode index that refused it
                raise
            return None
        return to_record(AlertRecord, row)

    def extend(  # noqa: PLR0917 (the figures of the window that extends it)
        self,
        alert_id: int,
        window: datetime,
        level: AlertLevel,
        value: float | None,
        threshold: float | None,
        message: str,
        details: dict[str, Any],
    ) -> AlertRecord | None:
        """Count one more window over the threshold (streak + 1, the window's figures); None
        when the episode is no longer live or has seen ``window`` (or a later one) already."""
        check_choice("level", level, t.ALERT_LEVELS)
        c = self._table.c
        return self._cas(
            self._unseen(alert_id, window).values(
                streak=c.streak + 1,
                last_window=window,
                level=level,
                value=value,
                threshold=threshold,
                message=message,
                details=details,
            )
        )

    def open(self, alert_id: int, now: datetime) -> AlertRecord | None:
        """Pending -> open; None when it is not pending (another monitor opened it)."""
        check_aware("now", now)
        c = self._table.c
        return self._cas(
            sa.update(self._table)
            .where(c.id == alert_id, c.status == "pending")
            .values(status="open", opened_at=now)
        )

    def set_details(self, alert_id: int, details: dict[str, Any]) -> AlertRecord:
        row = self._cas(
            sa.update(self._table).where(self._table.c.id == alert_id).values(details=details)
        )
        if row is None:
            raise _no_alert(alert_id)
        return row

    def resolve(self, alert_id: int, window: datetime, now: datetime) -> AlertRecord | None:
        """End a live episode at ``window`` (a window within the thresholds); None when it is
        not live any more or has seen ``window`` already."""
        check_aware("now", now)
        return self._cas(
            self._unseen(alert_id, window).values(
                status="resolved", resolved_at=now, last_window=window
            )
        )

    def _unseen(self, alert_id: int, window: datetime) -> sa.Update:
        check_aware("window", window)
        c = self._table.c
        return sa.update(self._table).where(
            c.id == alert_id, c.status.in_(("pending", "open")), c.last_window < window
        )

    def get(self, alert_id: int) -> AlertRecord:
        found = self._one(sa.select(self._table).where(self._table.c.id == alert_id))
        if found is None:
            raise _no_alert(alert_id)
        return found

    def list(
        self,
        pipeline: str | None = None,
        status: Sequence[AlertStatus] | None = None,
        limit: int = 50,
    ) -> builtins.list[AlertRecord]:
        """Episodes, the most recently changed first (by their latest window)."""
        c = self._table.c
        stmt = sa.select(self._table).order_by(c.last_window.desc(), c.id.desc()).limit(limit)
        if pipeline is not None:
            stmt = stmt.where(c.pipeline == pipeline)
        if status is not None:
            for s in status:
                check_choice("status", s, t.ALERT_STATUSES)
            stmt = stmt.where(c.status.in_(builtins.list(status)))
        return [to_record(AlertRecord, row) for row in self._session.execute(stmt)]

    def ack(self, alert_id: int, actor: str, note: str | None = None) -> AlertRecord:
        """Record that ``actor`` has seen the episode (whatever its status), with an audit
        event in the same transaction. Acknowledging again replaces the earlier one (both
        stay in the audit log)."""
        if not actor.strip():
            raise ValueError("an acknowledgement needs an actor")
        found = self.get(alert_id)
        stamp = _now()
        row = self._cas(
            sa.update(self._table)
            .where(self._table.c.id == alert_id)
            .values(acked_by=actor, acked_at=stamp, ack_note=note)
        )
        AuditRepository(self._session).record(
            actor, ACK_ACTION, found.pipeline, reason=note,
            details={"alert": alert_id, "check": found.check, "status": found.status,
                     "level": found.level},
        )  # fmt: skip
        if row is None:  # pragma: no cover - get() above found it in this transaction
            raise _no_alert(alert_id)
        return row

    def open_counts(self) -> builtins.list[OpenCount]:
        """Open episodes per (pipeline, kind, level)."""
        c = self._table.c
        rows = self._session.execute(
            sa.select(c.pipeline, c.kind, c.level, sa.func.count())
            .where(c.status == "open")
            .group_by(c.pipeline, c.kind, c.level)
            .order_by(c.pipeline, c.kind, c.level)
        )
        return [OpenCount(p, k, lv, int(n)) for p, k, lv, n in rows]

    # -- the outbox ----------------------------------------------------------------------------

    def enqueue(
        self, alert_id: int, event: DeliveryEvent, channels: Sequence[str], now: datetime
    ) -> builtins.list[DeliveryRecord]:
        """Queue ``event`` of the alert for each channel, due at once; a (alert, event,
        channel) queued before is left as it is. Returns the deliveries queued now."""
        check_choice("event", event, t.DELIVERY_EVENTS)
        check_aware("now", now)
        queued = []
        for channel in dict.fromkeys(channels):
            values = {
                "alert_id": alert_id, "event": event, "channel": channel, "status": "pending",
                "attempts": 0, "next_attempt_at": now, "created_at": now,
            }  # fmt: skip
            try:
                with self._session.begin_nested():
                    row = self._session.execute(
                        sa.insert(self._outbox).values(**values).returning(*self._outbox.c)
                    ).one()
            except sa_exc.IntegrityError:
                continue
            queued.append(to_record(DeliveryRecord, row))
        return queued

    def due(
        self, now: datetime, channels: Sequence[str] | None = None, limit: int = 100
    ) -> builtins.list[DeliveryRecord]:
        """Pending deliveries whose time has come (of those channels, when given), the
        longest waiting first."""
        check_aware("now", now)
        c = self._outbox.c
        stmt = sa.select(self._outbox).where(c.status == "pending", c.next_attempt_at <= now)
        if channels is not None:
            stmt = stmt.where(c.channel.in_(builtins.list(channels)))
        rows = self._session.execute(stmt.order_by(c.next_attempt_at, c.id).limit(limit))
        return [to_record(DeliveryRecord, row) for row in rows]

    def claim(self, delivery_id: int, now: datetime, until: datetime) -> DeliveryRecord | None:
        """Take a due delivery for sending until ``until`` (its next attempt moves there, so a
        sender that dies leaves it due again then); None when another sender took it first."""
        check_aware("until", until)
        c = self._outbox.c
        return self._outbox_cas(
            sa.update(self._outbox)
            .where(c.id == delivery_id, c.status == "pending", c.next_attempt_at <= now)
            .values(next_attempt_at=until)
        )

    def delivered(self, delivery_id: int, now: datetime) -> DeliveryRecord:
        """Mark it delivered; the alert's ``notified_at`` is the first delivery's time."""
        check_aware("now", now)
        c = self._outbox.c
        row = self._outbox_cas(
            sa.update(self._outbox)
            .where(c.id == delivery_id)
            .values(status="delivered", delivered_at=now, attempts=c.attempts + 1, last_error=None)
        )
        if row is None:
            raise _no_delivery(delivery_id)
        a = self._table.c
        self._session.execute(
            sa.update(self._table)
            .where(a.id == row.alert_id, a.notified_at.is_(None))
            .values(notified_at=now)
        )
        return row

    def retry_later(self, delivery_id: int, now: datetime, error: str) -> DeliveryRecord:
        """Count a failed attempt and keep the delivery pending until ``backoff`` later."""
        check_aware("now", now)
        c = self._outbox.c
        attempts = self._session.scalar(sa.select(c.attempts).where(c.id == delivery_id))
        if attempts is None:
            raise _no_delivery(delivery_id)
        row = self._outbox_cas(
            sa.update(self._outbox)
            .where(c.id == delivery_id)
            .values(
                attempts=attempts + 1,
                next_attempt_at=now + backoff(attempts + 1),
                last_error=error[:2000],
            )
        )
        if row is None:  # pragma: no cover - read just above in this transaction
            raise _no_delivery(delivery_id)
        return row

    def deliveries(self, alert_id: int) -> builtins.list[DeliveryRecord]:
        c = self._outbox.c
        rows = self._session.execute(
            sa.select(self._outbox).where(c.alert_id == alert_id).order_by(c.id)
        )
        return [to_record(DeliveryRecord, row) for row in rows]

    def pending_deliveries(self) -> int:
        c = self._outbox.c
        return int(
            self._session.scalar(sa.select(sa.func.count()).where(c.status == "pending")) or 0
        )

    # -- helpers -------------------------------------------------------------------------------

    def _one(self, stmt: Any) -> AlertRecord | None:
        row = self._session.execute(stmt).first()
        return None if row is None else to_record(AlertRecord, row)

    def _cas(self, stmt: Any) -> AlertRecord | None:
        row = self._session.execute(stmt.returning(*self._table.c)).first()
        return None if row is None else to_record(AlertRecord, row)

    def _outbox_cas(self, stmt: Any) -> DeliveryRecord | None:
        row = self._session.execute(stmt.returning(*self._outbox.c)).first()
        return None if row is None else to_record(DeliveryRecord, row)


def _no_alert(alert_id: int) -> NotFoundError:
    return NotFoundError(
        f"no alert {alert_id}", hint="`kiln alerts list --all` shows every alert and its id"
    )


def _no_delivery(delivery_id: int) -> NotFoundError:
    return NotFoundError(f"no alert delivery {delivery_id}")
