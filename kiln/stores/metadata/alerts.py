"""Alert episodes (their notification outbox is kiln/stores/metadata/outbox.py).

An episode is one stretch of windows in which a check of a pipeline stays over a threshold.
The partial unique index ``ux_alerts_one_episode`` lets a check have one live (pending or open)
episode at most, so two monitors judging the same window cannot both start one: the loser's
insert is refused by that index (ON CONFLICT DO NOTHING, so its transaction goes on) and it
reads the winner's row. Every later change is an UPDATE
conditional on what was read (compare-and-set, as stages and schedule firings do): a window
older than or equal to the episode's ``last_window`` changes nothing, so a window seen twice, by
one monitor or two, counts once.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
from kiln.stores.metadata.base import now as _now
from kiln.stores.metadata.repositories import AuditRepository
from kiln.stores.metadata.tables.base import LIVE_EPISODE_WHERE

__all__ = [
    "AlertLevel",
    "AlertRecord",
    "AlertRepository",
    "AlertStatus",
    "Extension",
    "NewEpisode",
    "OpenCount",
]

AlertLevel = Literal["warn", "alert"]
AlertStatus = Literal["pending", "open", "resolved"]

_LIVE = ("pending", "open")
ACK_ACTION = "ack_alert"


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
class NewEpisode:
    check: str
    kind: str
    level: AlertLevel
    value: float | None
    threshold: float | None
    message: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Extension:
    alert_id: int
    level: AlertLevel
    value: float | None
    threshold: float | None
    message: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OpenCount:
    pipeline: str
    kind: str
    level: str
    count: int


class AlertRepository(Repository):
    _table = t.table_of(t.Alert)

    # -- episodes ------------------------------------------------------------------------------

    def live(self, pipeline: str, check: str) -> AlertRecord | None:
        """The pending or open episode of ``check``, if any (there is one at most)."""
        c = self._table.c
        return self._one(
            sa.select(self._table).where(
                c.pipeline == pipeline, c.check == check, c.status.in_(_LIVE)
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

    def live_map(self, pipeline: str, checks: Sequence[str]) -> dict[str, AlertRecord]:
        """The live episodes of those checks, by check (one query per 500 checks)."""
        c = self._table.c
        found: dict[str, AlertRecord] = {}
        for chunk in _chunks(checks):
            rows = self._session.execute(
                sa.select(self._table).where(
                    c.pipeline == pipeline, c.check.in_(chunk), c.status.in_(_LIVE)
                )
            )
            found |= {row.check: to_record(AlertRecord, row) for row in rows}
        return found

    def last_windows(self, pipeline: str, checks: Sequence[str]) -> dict[str, datetime]:
        """The latest window any episode of each check has seen (checks never alerted: absent)."""
        c = self._table.c
        found: dict[str, datetime] = {}
        for chunk in _chunks(checks):
            rows = self._session.execute(
                sa.select(c.check, sa.func.max(c.last_window))
                .where(c.pipeline == pipeline, c.check.in_(chunk))
                .group_by(c.check)
            )
            found |= {check: _utc(last) for check, last in rows}
        return found

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
        new = NewEpisode(check, kind, level, value, threshold, message, details or {})
        return self.start_many(pipeline, window, [new]).get(check)

    def start_many(
        self, pipeline: str, window: datetime, episodes: Sequence[NewEpisode]
    ) -> dict[str, AlertRecord]:
        """Start pending episodes at ``window`` (streak 1), by check, in one statement per 200.
        A check that has a live episode already (another monitor started it first) is left
        out: the one-episode index refuses it (ON CONFLICT DO NOTHING: no error to catch, so
        the transaction goes on), and the caller reads the winner's with ``live_map``."""
        check_aware("window", window)
        rows = []
        for e in episodes:
            check_choice("kind", e.kind, t.ALERT_KINDS)
            check_choice("level", e.level, t.ALERT_LEVELS)
            rows.append({
                "pipeline": pipeline, "check": e.check, "kind": e.kind, "level": e.level,
                "status": "pending", "streak": 1, "first_window": window, "last_window": window,
                "value": e.value, "threshold": e.threshold, "message": e.message,
                "details": e.details,
            })  # fmt: skip
        started = {}
        for chunk in _chunks(rows, 200):
            stmt = insert_ignoring(
                self._session,
                self._table,
                chunk,
                ["pipeline", "check"],
                # the partial index's own predicate as literal SQL: with bound parameters,
                # PostgreSQL cannot infer the index once a prepared statement gets a generic
                # plan (its 11th run on a connection): "no unique or exclusion constraint matching"
                sa.text(LIVE_EPISODE_WHERE),
            )
            for row in self._session.execute(stmt.returning(*self._table.c)):
                started[row.check] = to_record(AlertRecord, row)
        return started

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

    def extend_many(self, window: datetime, extensions: Sequence[Extension]) -> None:
        """``extend`` for many episodes in one executemany, for the extensions nobody is
        notified of (the caller does not need to know which ones another monitor counted
        first: the same compare-and-set keeps the window counted once)."""
        if not extensions:
            return
        check_aware("window", window)
        c = self._table.c
        stmt = (
            sa.update(self._table)
            .where(
                c.id == sa.bindparam("b_id"),
                c.status != "resolved",  # live; not IN (...), which executemany cannot expand
                c.last_window < sa.bindparam("b_window"),
            )
            .values(
                streak=c.streak + 1, last_window=sa.bindparam("b_window"),
                level=sa.bindparam("b_level"), value=sa.bindparam("b_value"),
                threshold=sa.bindparam("b_threshold"), message=sa.bindparam("b_message"),
                details=sa.bindparam("b_details", type_=sa.JSON()),
            )
        )  # fmt: skip
        params = []
        for e in extensions:
            check_choice("level", e.level, t.ALERT_LEVELS)
            params.append({
                "b_id": e.alert_id, "b_window": window, "b_level": e.level, "b_value": e.value,
                "b_threshold": e.threshold, "b_message": e.message, "b_details": e.details,
            })  # fmt: skip
        self._session.execute(stmt, params)

    def open(
        self, alert_id: int, now: datetime, details: dict[str, Any] | None = None
    ) -> AlertRecord | None:
        """Pending -> open (with ``details``, when given); None when it is not pending
        (another monitor opened it)."""
        check_aware("now", now)
        c = self._table.c
        more = {} if details is None else {"details": details}
        return self._cas(
            sa.update(self._table)
            .where(c.id == alert_id, c.status == "pending")
            .values(status="open", opened_at=now, **more)
        )

    def open_many(
        self, alert_ids: Sequence[int], consecutive: int, now: datetime
    ) -> builtins.list[AlertRecord]:
        """Open those pending episodes whose streak has reached ``consecutive``; returns the
        ones this call opened (compare-and-set on the status: two monitors open each once)."""
        check_aware("now", now)
        c = self._table.c
        opened = []
        for chunk in _chunks(alert_ids):
            stmt = (
                sa.update(self._table)
                .where(c.id.in_(chunk), c.status == "pending", c.streak >= consecutive)
                .values(status="open", opened_at=now)
                .returning(*self._table.c)
            )
            opened += [to_record(AlertRecord, row) for row in self._session.execute(stmt)]
        return sorted(opened, key=lambda a: a.id)

    def resolve_many(
        self,
        alert_ids: Sequence[int],
        window: datetime,
        now: datetime,
        status: AlertStatus,
    ) -> builtins.list[AlertRecord]:
        """``resolve`` those episodes that are still ``status`` (pending or open), so the
        caller knows which were notified; returns the ones this call resolved."""
        check_aware("window", window)
        check_aware("now", now)
        c = self._table.c
        resolved = []
        for chunk in _chunks(alert_ids):
            stmt = (
                sa.update(self._table)
                .where(c.id.in_(chunk), c.status == status, c.last_window < window)
                .values(status="resolved", resolved_at=now, last_window=window)
                .returning(*self._table.c)
            )
            resolved += [to_record(AlertRecord, row) for row in self._session.execute(stmt)]
        return sorted(resolved, key=lambda a: a.id)

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
            c.id == alert_id, c.status.in_(_LIVE), c.last_window < window
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

    def _one(self, stmt: Any) -> AlertRecord | None:
        row = self._session.execute(stmt).first()
        return None if row is None else to_record(AlertRecord, row)

    def _cas(self, stmt: Any) -> AlertRecord | None:
        row = self._session.execute(stmt.returning(*self._table.c)).first()
        return None if row is None else to_record(AlertRecord, row)


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[builtins.list[Any]]:
    for i in range(0, len(items), size):
        yield builtins.list(items[i : i + size])


def _utc(moment: Any) -> datetime:
    """A datetime read by an aggregate (SQLite gives naive UTC text, PostgreSQL aware)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _no_alert(alert_id: int) -> NotFoundError:
    return NotFoundError(
        f"no alert {alert_id}", hint="`kiln alerts list --all` shows every alert and its id"
    )
