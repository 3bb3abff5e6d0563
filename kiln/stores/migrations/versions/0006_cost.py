"""Cost: what a task added over its worker's resident set, the usage of earlier attempts that a
resume ran again (tasks and steps), the compute of gates evaluated outside a run, the serving
usage each server process records, and measured storage per pipeline.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
STORAGE_KINDS = ("packages", "snapshots", "captures", "labels")


def _in(column: str, values: Sequence[str]) -> str:
    return f'"{column}" IN ({", ".join(repr(v) for v in values)})'


def upgrade() -> None:
    with op.batch_alter_table("tasks", recreate="auto") as batch:
        batch.add_column(sa.Column("base_memory_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("earlier_attempts", sa.JSON(), nullable=True))
    with op.batch_alter_table("steps", recreate="auto") as batch:
        batch.add_column(sa.Column("earlier_attempts", sa.JSON(), nullable=True))
    with op.batch_alter_table("gate_results", recreate="auto") as batch:
        batch.add_column(sa.Column("wall_seconds", sa.Double(), nullable=True))
        batch.add_column(sa.Column("cpu_seconds", sa.Double(), nullable=True))
        batch.add_column(sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True))
    op.create_table(
        "server_intervals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("interval_start", TZ, nullable=False),
        sa.Column("interval_end", TZ, nullable=False),
        sa.Column("cpu_seconds", sa.Double(), nullable=False),
        sa.Column("rss_bytes", sa.BigInteger(), nullable=False),
        sa.Column("reserved_cpus", sa.Double(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("pipelines", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_intervals")),
        sa.UniqueConstraint(
            "server", "interval_start", name=op.f("uq_server_intervals_server_interval_start")
        ),
    )
    op.create_index("ix_server_intervals_end", "server_intervals", ["interval_end"])
    op.create_table(
        "serving_usage",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("interval_start", TZ, nullable=False),
        sa.Column("interval_end", TZ, nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(200), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("cpu_seconds", sa.Double(), nullable=False),
        sa.Column("shared_cpu_seconds", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_usage")),
        sa.UniqueConstraint(
            "server", "interval_start", "pipeline", "version", "segment", "stage",
            name=op.f("uq_serving_usage_server_interval_start_pipeline_version_segment_stage"),
        ),  # fmt: skip
    )
    op.create_index(
        "ix_serving_usage_pipeline_start", "serving_usage", ["pipeline", "interval_start"]
    )
    op.create_table(
        "storage_usage",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("measured_at", TZ, nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("objects", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_usage")),
        sa.CheckConstraint(_in("kind", STORAGE_KINDS), name=op.f("ck_storage_usage_kind")),
    )
    op.create_index(
        "ix_storage_usage_pipeline_kind_at", "storage_usage", ["pipeline", "kind", "measured_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_storage_usage_pipeline_kind_at", table_name="storage_usage")
    op.drop_table("storage_usage")
    op.drop_index("ix_serving_usage_pipeline_start", table_name="serving_usage")
    op.drop_table("serving_usage")
    op.drop_index("ix_server_intervals_end", table_name="server_intervals")
    op.drop_table("server_intervals")
    with op.batch_alter_table("gate_results", recreate="auto") as batch:
        batch.drop_column("peak_memory_bytes")
        batch.drop_column("cpu_seconds")
        batch.drop_column("wall_seconds")
    with op.batch_alter_table("steps", recreate="auto") as batch:
        batch.drop_column("earlier_attempts")
    with op.batch_alter_table("tasks", recreate="auto") as batch:
        batch.drop_column("earlier_attempts")
        batch.drop_column("base_memory_bytes")
