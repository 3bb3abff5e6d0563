"""Gate results become history (a re-check adds a row, with what triggered it and the champion
it was judged against); a schedule firing can end ``blocked`` (the run's version was blocked by
its gates: an outcome, not a failure to retry).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GATE_TRIGGERS = ("run", "watch", "recheck")
OLD_FIRE_STATUSES = ("running", "succeeded", "retrying", "failed", "skipped")
FIRE_STATUSES = ("running", "succeeded", "blocked", "retrying", "failed", "skipped")
UNIQUE = "uq_gate_results_pipeline_version_gate"
INDEX = "ix_gate_results_pipeline_version"


def _in(column: str, values: Sequence[str]) -> str:
    return f'"{column}" IN ({", ".join(repr(v) for v in values)})'


def _fire_statuses(statuses: Sequence[str]) -> None:
    with op.batch_alter_table("schedule_fires", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_schedule_fires_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_schedule_fires_status"), sa.text(_in("status", statuses))
        )


def upgrade() -> None:
    with op.batch_alter_table("gate_results", recreate="auto") as batch:
        batch.drop_constraint(UNIQUE, type_="unique")
        batch.add_column(
            sa.Column("trigger", sa.String(16), nullable=False, server_default="run")
        )
        batch.add_column(sa.Column("champion_version", sa.Integer(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_gate_results_trigger"), sa.text(_in("trigger", GATE_TRIGGERS))
        )
        batch.create_index(INDEX, ["pipeline", "version"])
    with op.batch_alter_table("gate_results", recreate="auto") as batch:
        batch.alter_column("trigger", server_default=None)
    # The champion an existing result was judged against, where its evidence names it (the
    # champion/challenger and replay gates do); a re-check compares against the same one.
    results = sa.table(
        "gate_results",
        sa.column("id", sa.Integer()),
        sa.column("evidence", sa.JSON()),
        sa.column("champion_version", sa.Integer()),
    )
    conn = op.get_bind()
    for row in conn.execute(sa.select(results.c.id, results.c.evidence)).all():
        champion = (row.evidence or {}).get("champion_version")
        if isinstance(champion, int):
            conn.execute(
                sa.update(results)
                .where(results.c.id == row.id)
                .values(champion_version=champion)
            )
    _fire_statuses(FIRE_STATUSES)


def downgrade() -> None:
    op.execute(
        "UPDATE schedule_fires SET status = 'succeeded' WHERE status = 'blocked'"
    )
    _fire_statuses(OLD_FIRE_STATUSES)
    # One row per gate again: the latest decision (a run or watch result) wins over re-checks.
    op.execute(
        "DELETE FROM gate_results WHERE id NOT IN (SELECT keep FROM (SELECT MAX(id) AS keep"
        " FROM gate_results WHERE \"trigger\" <> 'recheck' GROUP BY pipeline, version, gate"
        " UNION SELECT MAX(g.id) FROM gate_results g WHERE NOT EXISTS (SELECT 1 FROM"
        " gate_results d WHERE d.pipeline = g.pipeline AND d.version = g.version AND"
        " d.gate = g.gate AND d.\"trigger\" <> 'recheck') GROUP BY g.pipeline, g.version,"
        " g.gate) AS kept)"
    )
    with op.batch_alter_table("gate_results", recreate="auto") as batch:
        batch.drop_index(INDEX)
        batch.drop_constraint(op.f("ck_gate_results_trigger"), type_="check")
        batch.drop_column("champion_version")
        batch.drop_column("trigger")
        batch.create_unique_constraint(UNIQUE, ["pipeline", "version", "gate"])
