"""The tables of the monitor: computed windows, alert episodes and their notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from kiln.stores.metadata.tables.base import (
    ALERT_KINDS,
    ALERT_LEVELS,
    ALERT_STATUSES,
    DELIVERY_EVENTS,
    DELIVERY_STATUSES,
    LIVE_EPISODE_WHERE,
    ONE_EPISODE,
    WINDOW_STATES,
    Base,
    one_of,
)


class MonitorWindow(Base):
    """One computed monitor window of a pipeline. The unique (pipeline, window_start,
    window_seconds) makes two monitors that compute the same window store it once."""

    __tablename__ = "monitor_windows"
    __table_args__ = (
        one_of("state", WINDOW_STATES),
        sa.UniqueConstraint("pipeline", "window_start", "window_seconds"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.String(200))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    window_seconds: Mapped[int]
    computed_at: Mapped[datetime]
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    state: Mapped[str] = mapped_column(sa.String(16))
    worst: Mapped[str | None] = mapped_column(sa.Text)
    summary: Mapped[dict[str, Any]]


class Alert(Base):
    """An alert episode of one check of a pipeline: pending while its figure has been over a
    threshold for fewer windows than ``monitor.consecutive``, open (notified once) from then,
    resolved when the figure recovers. At most one pending-or-open episode per check."""

    __tablename__ = "alerts"
    __table_args__ = (
        one_of("kind", ALERT_KINDS),
        one_of("level", ALERT_LEVELS),
        one_of("status", ALERT_STATUSES),
        sa.Index(
            ONE_EPISODE,
            "pipeline",
            "check",
            unique=True,
            sqlite_where=sa.text(LIVE_EPISODE_WHERE),
            postgresql_where=sa.text(LIVE_EPISODE_WHERE),
        ),
        sa.Index("ix_alerts_pipeline_status", "pipeline", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.String(200))
    check: Mapped[str] = mapped_column(sa.String(300))
    kind: Mapped[str] = mapped_column(sa.String(16))
    level: Mapped[str] = mapped_column(sa.String(8))
    status: Mapped[str] = mapped_column(sa.String(16))
    streak: Mapped[int]
    opened_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    first_window: Mapped[datetime]
    last_window: Mapped[datetime]
    value: Mapped[float | None]
    threshold: Mapped[float | None]
    message: Mapped[str] = mapped_column(sa.Text)
    details: Mapped[dict[str, Any]]
    notified_at: Mapped[datetime | None]
    acked_by: Mapped[str | None] = mapped_column(sa.String(200))
    acked_at: Mapped[datetime | None]
    ack_note: Mapped[str | None] = mapped_column(sa.Text)


class AlertDelivery(Base):
    """One notification of an alert event to one channel: the outbox. A notification that
    could not be delivered stays pending and is retried on a later pass, never lost."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        one_of("event", DELIVERY_EVENTS),
        one_of("status", DELIVERY_STATUSES),
        sa.UniqueConstraint("alert_id", "event", "channel"),
        sa.Index("ix_alert_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(sa.ForeignKey("alerts.id"))
    event: Mapped[str] = mapped_column(sa.String(16))
    channel: Mapped[str] = mapped_column(sa.String(500))
    status: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
