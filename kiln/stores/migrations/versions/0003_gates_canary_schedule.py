"""The release loop: gate results, a canary stage with its traffic share, schedule firings.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
ONE_PRODUCTION = "ux_model_versions_one_production"
PRODUCTION = "stage = 'production'"
OLD_STAGES = ("candidate", "shadow", "production", "archived", "blocked")
STAGES = ("candidate", "shadow", "canary", "production", "archived", "blocked")
OLD_ACTIONS = ("promote", "rollback", "shadow", "unshadow", "archive")
ACTIONS = ("promote", "rollback", "shadow", "unshadow", "archive", "canary", "block")
GATE_STATUSES = ("passed", "failed", "pending", "skipped")
FIRE_STATUSES = ("running", "succeeded", "retrying", "failed", "skipped")


def _in(column: str, values: Sequence[str]) -> str:
    return f'"{column}" IN ({", ".join(repr(v) for v in values)})'


def _stages(stages: Sequence[str], actions: Sequence[str]) -> None:
    # SQLite cannot alter a CHECK constraint: batch mode copies the table. The partial unique
    # index is dropped first and made again after, so the copy cannot lose its WHERE clause.
    op.drop_index(ONE_PRODUCTION, table_name="model_versions")
    with op.batch_alter_table("model_versions", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_model_versions_stage"), type_="check")
        batch.create_check_constraint(op.f("ck_model_versions_stage"), sa.text(_in("stage", stages)))
    op.create_index(
        ONE_PRODUCTION,
        "model_versions",
        ["pipeline"],
        unique=True,
        sqlite_where=sa.text(PRODUCTION),
        postgresql_where=sa.text(PRODUCTION),
    )
    with op.batch_alter_table("deployments", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_deployments_action"), type_="check")
        batch.create_check_constraint(op.f("ck_deployments_action"), sa.text(_in("action", actions)))


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("traffic_share", sa.Float(), nullable=True))
    _stages(STAGES, ACTIONS)
    op.create_table(
        "gate_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("gate", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("evaluated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_results")),
        sa.CheckConstraint(_in("status", GATE_STATUSES), name=op.f("ck_gate_results_status")),
        sa.UniqueConstraint(
            "pipeline", "version", "gate", name=op.f("uq_gate_results_pipeline_version_gate")
        ),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("due_at", TZ, nullable=False),
        sa.Column("config_path", sa.Text(), nullable=False),
        sa.Column("scheduler", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("claimed_at", TZ, nullable=False),
        sa.Column("heartbeat_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("next_retry_at", TZ, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_fires")),
        sa.CheckConstraint(_in("status", FIRE_STATUSES), name=op.f("ck_schedule_fires_status")),
        sa.UniqueConstraint("pipeline", "due_at", name=op.f("uq_schedule_fires_pipeline_due_at")),
    )


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_table("gate_results")
    op.execute("UPDATE model_versions SET stage = 'shadow' WHERE stage = 'canary'")
    op.execute("DELETE FROM deployments WHERE action IN ('canary', 'block')")
    _stages(OLD_STAGES, OLD_ACTIONS)
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("traffic_share")
