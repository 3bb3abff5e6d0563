"""The notification outbox of alert episodes: one row per (alert, event, channel).

A delivery is written in the same transaction as the episode change that causes it, claimed
before it is sent (its next attempt moves past the sender's lease) so that two senders never
send it twice, and kept pending with a later ``next_attempt_at`` when the channel fails: never
lost. Status ``failed`` is never set: a notification is retried, at most an hour apart, until
its channel takes it.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from kiln.errors import NotFoundError
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import (
    Repository,
    check_aware,
    check_choice,
    insert_ignoring,
    to_record,
)

__all__ = [
    "MAX_BACKOFF",
    "DeliveryEvent",
    "DeliveryRecord",
    "DeliveryStatus",
    "OutboxRepository",
    "backoff",
]

DeliveryEvent = Literal["opened", "resolved"]
DeliveryStatus = Literal["pending", "delivered", "failed"]
FIRST_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=1)


def backoff(attempts: int) -> timedelta:
    """How long a delivery that failed ``attempts`` times waits: 30 s, doubled per failure,
    at most an hour (a channel down for a day is tried every hour, never given up)."""
    return min(FIRST_BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


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


class OutboxRepository(Repository):
    _table = t.table_of(t.AlertDelivery)
    _alerts = t.table_of(t.Alert)

    def enqueue(
        self, alert_id: int, event: DeliveryEvent, channels: Sequence[str], now: datetime
    ) -> builtins.list[DeliveryRecord]:
        """Queue ``event`` of the alert for each channel, due at once; a (alert, event,
        channel) queued before is left as it is. Returns the deliveries queued now."""
        return self.enqueue_many([(alert_id, event, c) for c in channels], now)

    def enqueue_many(
        self, items: Sequence[tuple[int, DeliveryEvent, str]], now: datetime
    ) -> builtins.list[DeliveryRecord]:
        """``enqueue`` many (alert, event, channel) at once, in one statement per 500."""
        check_aware("now", now)
        rows = []
        for alert_id, event, channel in dict.fromkeys(items):
            check_choice("event", event, t.DELIVERY_EVENTS)
            rows.append({
                "alert_id": alert_id, "event": event, "channel": channel, "status": "pending",
                "attempts": 0, "next_attempt_at": now, "created_at": now,
            })  # fmt: skip
        queued: list[Any] = []
        for i in range(0, len(rows), 500):
            keys = ["alert_id", "event", "channel"]
            stmt = insert_ignoring(self._session, self._table, rows[i : i + 500], keys)
            queued += self._session.execute(stmt.returning(*self._table.c)).all()
        return sorted((to_record(DeliveryRecord, row) for row in queued), key=lambda d: d.id)

    def due(
        self,
        now: datetime,
        channels: Sequence[str] | None = None,
        limit: int = 100,
        *,
        pipeline: str | None = None,
    ) -> builtins.list[DeliveryRecord]:
        """Pending deliveries whose time has come (of those channels, and of the alerts of
        that pipeline, when given), the longest waiting first. A sender passes its pipeline:
        it holds that pipeline's channels (URL, headers), never another's."""
        check_aware("now", now)
        c = self._table.c
        stmt = sa.select(self._table).where(c.status == "pending", c.next_attempt_at <= now)
        if channels is not None:
            stmt = stmt.where(c.channel.in_(builtins.list(channels)))
        if pipeline is not None:
            a = self._alerts.c
            stmt = stmt.where(c.alert_id.in_(sa.select(a.id).where(a.pipeline == pipeline)))
        rows = self._session.execute(stmt.order_by(c.next_attempt_at, c.id).limit(limit))
        return [to_record(DeliveryRecord, row) for row in rows]

    def claim(self, delivery_id: int, now: datetime, until: datetime) -> DeliveryRecord | None:
        """Take a due delivery for sending until ``until`` (its next attempt moves there, so a
        sender that dies leaves it due again then); None when another sender took it first."""
        check_aware("until", until)
        c = self._table.c
        return self._cas(
            sa.update(self._table)
            .where(c.id == delivery_id, c.status == "pending", c.next_attempt_at <= now)
            .values(next_attempt_at=until)
        )

    def postpone(
        self, delivery_ids: Sequence[int], now: datetime, until: datetime, reason: str
    ) -> builtins.list[int]:
        """Move due deliveries that were not tried to ``until`` (their channel just failed in
        this pass), attempts unchanged: an attempt counts a send. A delivery another sender
        claimed meanwhile (next attempt past ``now``) is left to it. Returns the ids moved."""
        check_aware("now", now)
        check_aware("until", until)
        if not delivery_ids:
            return []
        c = self._table.c
        rows = self._session.execute(
            sa.update(self._table)
            .where(
                c.id.in_(builtins.list(delivery_ids)),
                c.status == "pending",
                c.next_attempt_at <= now,
            )
            .values(next_attempt_at=until, last_error=reason[:2000])
            .returning(c.id)
        )
        return sorted(int(row.id) for row in rows)

    def delivered(self, delivery_id: int, now: datetime) -> DeliveryRecord:
        """Mark it delivered; the alert's ``notified_at`` is the first delivery's time."""
        check_aware("now", now)
        c = self._table.c
        row = self._cas(
            sa.update(self._table)
            .where(c.id == delivery_id)
            .values(status="delivered", delivered_at=now, attempts=c.attempts + 1, last_error=None)
        )
        if row is None:
            raise _no_delivery(delivery_id)
        a = self._alerts.c
        self._session.execute(
            sa.update(self._alerts)
            .where(a.id == row.alert_id, a.notified_at.is_(None))
            .values(notified_at=now)
        )
        return row

    def retry_later(self, delivery_id: int, now: datetime, error: str) -> DeliveryRecord:
        """Count a failed attempt and keep the delivery pending until ``backoff`` later."""
        check_aware("now", now)
        c = self._table.c
        attempts = self._session.scalar(sa.select(c.attempts).where(c.id == delivery_id))
        if attempts is None:
            raise _no_delivery(delivery_id)
        row = self._cas(
            sa.update(self._table)
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
        c = self._table.c
        rows = self._session.execute(
            sa.select(self._table).where(c.alert_id == alert_id).order_by(c.id)
        )
        return [to_record(DeliveryRecord, row) for row in rows]

    def pending_deliveries(self) -> int:
        c = self._table.c
        return int(
            self._session.scalar(sa.select(sa.func.count()).where(c.status == "pending")) or 0
        )

    def _cas(self, stmt: Any) -> DeliveryRecord | None:
        row = self._session.execute(stmt.returning(*self._table.c)).first()
        return None if row is None else to_record(DeliveryRecord, row)


def _no_delivery(delivery_id: int) -> NotFoundError:
    return NotFoundError(f"no alert delivery {delivery_id}")
