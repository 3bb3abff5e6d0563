"""Monitoring: one row per computed window, alert episodes, the notification outbox; a run
can be started by an alert (trigger drift or performance, and the alert's id), and so can a
schedule firing (its trigger and alert, so that a retry or a takeover runs the same command).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
OLD_RUN_TRIGGERS = ("manual", "schedule", "resume")
RUN_TRIGGERS = ("manual", "schedule", "resume", "drift", "performance")
WINDOW_STATES = ("ok", "warn", "alert", "no_traffic")
ALERT_KINDS = ("drift", "performance", "latency", "errors", "traffic", "budget")
ALERT_LEVELS = ("warn", "alert")
ALERT_STATUSES = ("pending", "open", "resolved")
DELIVERY_EVENTS = ("opened", "resolved")
DELIVERY_STATUSES = ("pending", "delivered", "failed")
ONE_EPISODE = "ux_alerts_one_episode"
LIVE_EPISODE = "status IN ('pending', 'open')"


def _in(column: str, values: Sequence[str]) -> str:
    return f'"{column}" IN ({", ".join(repr(v) for v in values)})'


def _run_triggers(triggers: Sequence[str]) -> None:
    with op.batch_alter_table("runs", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_runs_trigger"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_trigger"), sa.text(_in("trigger", triggers)))


def upgrade() -> None:
    with op.batch_alter_table("runs", recreate="auto") as batch:
        batch.add_column(sa.Column("alert_id", sa.Integer(), nullable=True))
    _run_triggers(RUN_TRIGGERS)
    with op.batch_alter_table("schedule_fires", recreate="auto") as batch:
        batch.add_column(sa.Column("trigger", sa.String(16), nullable=True))
        batch.add_column(sa.Column("alert_id", sa.Integer(), nullable=True))
    op.create_table(
        "monitor_windows",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("window_start", TZ, nullable=False),
        sa.Column("window_end", TZ, nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("computed_at", TZ, nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("worst", sa.Text(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_windows")),
        sa.CheckConstraint(_in("state", WINDOW_STATES), name=op.f("ck_monitor_windows_state")),
        sa.UniqueConstraint(
            "pipeline", "window_start", "window_seconds",
            name=op.f("uq_monitor_windows_pipeline_window_start_window_seconds"),
        ),  # fmt: skip
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("check", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("opened_at", TZ, nullable=True),
        sa.Column("resolved_at", TZ, nullable=True),
        sa.Column("first_window", TZ, nullable=False),
        sa.Column("last_window", TZ, nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("notified_at", TZ, nullable=True),
        sa.Column("acked_by", sa.String(200), nullable=True),
        sa.Column("acked_at", TZ, nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.CheckConstraint(_in("kind", ALERT_KINDS), name=op.f("ck_alerts_kind")),
        sa.CheckConstraint(_in("level", ALERT_LEVELS), name=op.f("ck_alerts_level")),
        sa.CheckConstraint(_in("status", ALERT_STATUSES), name=op.f("ck_alerts_status")),
    )
    op.create_index(
        ONE_EPISODE,
        "alerts",
        ["pipeline", "check"],
        unique=True,
        sqlite_where=sa.text(LIVE_EPISODE),
        postgresql_where=sa.text(LIVE_EPISODE),
    )
    op.create_index("ix_alerts_pipeline_status", "alerts", ["pipeline", "status"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("delivered_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_alert_deliveries_alert_id_alerts")
        ),
        sa.CheckConstraint(_in("event", DELIVERY_EVENTS), name=op.f("ck_alert_deliveries_event")),
        sa.CheckConstraint(
            _in("status", DELIVERY_STATUSES), name=op.f("ck_alert_deliveries_status")
        ),
        sa.UniqueConstraint(
            "alert_id", "event", "channel",
            name=op.f("uq_alert_deliveries_alert_id_event_channel"),
        ),  # fmt: skip
    )
    op.create_index(
        "ix_alert_deliveries_status_next", "alert_deliveries", ["status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_alert_deliveries_status_next", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index("ix_alerts_pipeline_status", table_name="alerts")
    op.drop_index(ONE_EPISODE, table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("monitor_windows")
    with op.batch_alter_table("schedule_fires", recreate="auto") as batch:
        batch.drop_column("alert_id")
        batch.drop_column("trigger")
    op.execute("UPDATE runs SET \"trigger\" = 'manual' WHERE \"trigger\" IN ('drift', 'performance')")
    _run_triggers(OLD_RUN_TRIGGERS)
    with op.batch_alter_table("runs", recreate="auto") as batch:
        batch.drop_column("alert_id")
