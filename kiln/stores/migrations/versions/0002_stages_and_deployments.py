"""Stages and deployments: at most one production version per pipeline, deployment history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
ONE_PRODUCTION = "ux_model_versions_one_production"
PRODUCTION = "stage = 'production'"
ACTIONS = ("promote", "rollback", "shadow", "unshadow", "archive")


def upgrade() -> None:
    # Fails (and rolls back the whole upgrade) if a pipeline already has two production
    # versions: that has to be repaired by hand, Kiln cannot guess which one serves.
    op.create_index(
        ONE_PRODUCTION,
        "model_versions",
        ["pipeline"],
        unique=True,
        sqlite_where=sa.text(PRODUCTION),
        postgresql_where=sa.text(PRODUCTION),
    )
    listed = ", ".join(f"'{a}'" for a in ACTIONS)
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.CheckConstraint(f'"action" IN ({listed})', name=op.f("ck_deployments_action")),
    )
    op.create_index("ix_deployments_pipeline_id", "deployments", ["pipeline", "id"])


def downgrade() -> None:
    op.drop_index("ix_deployments_pipeline_id", table_name="deployments")
    op.drop_table("deployments")
    op.drop_index(ONE_PRODUCTION, table_name="model_versions")
