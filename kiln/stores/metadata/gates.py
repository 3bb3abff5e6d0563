"""Gate results: the history of each gate of each version, with its evidence.

Results are appended, never rewritten: ``kiln gates check`` adds a ``recheck`` row beside the
``run`` row that decided the version's fate, so the reason a version was blocked (or
overridden) stays readable. The one exception is a ``pending`` result (a shadow period that is
not over): the outcome it waited for replaces it, since it judged nothing.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import Repository, check_choice, chunks, now, to_record
from kiln.stores.metadata.records import GateRecord, GateStatus, GateTrigger

__all__ = ["OUTSIDE_RUN_TRIGGERS", "GateRepository", "latest_per_gate"]

OUTSIDE_RUN_TRIGGERS: tuple[GateTrigger, ...] = ("watch", "recheck")
"""Gate results evaluated outside a run: a run's own gates are inside its release step."""


class GateRepository(Repository):
    _table = t.table_of(t.GateResult)

    def record(  # noqa: PLR0917 (the documented positional signature)
        self,
        pipeline: str,
        version: int,
        gate: str,
        status: GateStatus,
        summary: str,
        evidence: dict[str, Any],
        *,
        trigger: GateTrigger = "run",
        champion_version: int | None = None,
        wall_seconds: float | None = None,
        cpu_seconds: float | None = None,
        peak_memory_bytes: int | None = None,
    ) -> GateRecord:
        """Add the gate's outcome to the version's history (replacing only a ``pending``
        result of the same gate and trigger, which it concludes). The usage is the gate's own
        compute (None: not measured)."""
        check_choice("status", status, t.GATE_STATUSES)
        check_choice("trigger", trigger, t.GATE_TRIGGERS)
        values = {
            "pipeline": pipeline,
            "version": version,
            "gate": gate,
            "status": status,
            "summary": summary,
            "evidence": evidence,
            "evaluated_at": now(),
            "trigger": trigger,
            "champion_version": champion_version,
            "wall_seconds": wall_seconds,
            "cpu_seconds": cpu_seconds,
            "peak_memory_bytes": peak_memory_bytes,
        }
        c = self._table.c
        last = self._session.execute(
            sa.select(c.id, c.status, c.trigger, c.wall_seconds, c.cpu_seconds)
            .where(c.pipeline == pipeline, c.version == version, c.gate == gate)
            .order_by(c.id.desc())
            .limit(1)
        ).first()
        stmt: sa.Update | sa.Insert
        if last is not None and last.status == "pending" and last.trigger == trigger:
            # the pending evaluations were spent too: their compute adds up in the outcome
            for name in ("wall_seconds", "cpu_seconds"):
                if values[name] is not None and getattr(last, name) is not None:
                    values[name] += getattr(last, name)
            stmt = sa.update(self._table).where(c.id == last.id).values(**values)
        else:
            stmt = sa.insert(self._table).values(**values)
        row = self._session.execute(stmt.returning(*self._table.c)).one()
        return to_record(GateRecord, row)

    def history(self, pipeline: str, version: int) -> builtins.list[GateRecord]:
        """Every result of the version, oldest first."""
        c = self._table.c
        stmt = (
            sa.select(self._table)
            .where(c.pipeline == pipeline, c.version == version)
            .order_by(c.id)
        )
        return [to_record(GateRecord, g) for g in self._session.execute(stmt)]

    def for_version(self, pipeline: str, version: int) -> builtins.list[GateRecord]:
        """The results that decided the version's fate: the latest ``run`` or ``watch`` result
        of each gate (a re-check never replaces them). A version whose gates never ran with a
        release decision (``kiln run --skip-gates``) has its latest re-check instead."""
        found = self.history(pipeline, version)
        decided = [g for g in found if g.trigger != "recheck"]
        return latest_per_gate(decided or found)

    def outside_runs(
        self, since: datetime, until: datetime, pipelines: Collection[str] | None = None
    ) -> builtins.list[GateRecord]:
        """Results evaluated outside a run (:data:`OUTSIDE_RUN_TRIGGERS`) in [since, until),
        oldest first, of ``pipelines`` only when given (what cost reads: a run's own gates
        are inside its release step)."""
        c = self._table.c
        stmt = (
            sa.select(self._table)
            .where(
                c.evaluated_at >= since,
                c.evaluated_at < until,
                c.trigger.in_(OUTSIDE_RUN_TRIGGERS),
            )
            .order_by(c.evaluated_at, c.id)
        )
        if pipelines is None:
            return [to_record(GateRecord, g) for g in self._session.execute(stmt)]
        found = [
            to_record(GateRecord, g)
            for names in chunks(sorted(pipelines))
            for g in self._session.execute(stmt.where(c.pipeline.in_(names)))
        ]
        return sorted(found, key=lambda g: (g.evaluated_at, g.id))

    def latest(self, pipeline: str, version: int) -> builtins.list[GateRecord]:
        """The latest result of each gate, whatever evaluated it (a re-check included)."""
        return latest_per_gate(self.history(pipeline, version))


def latest_per_gate(results: builtins.list[GateRecord]) -> builtins.list[GateRecord]:
    """The last result of each gate, in the order the gates were first evaluated."""
    last: dict[str, GateRecord] = {}
    for g in sorted(results, key=lambda g: g.id):
        last[g.gate] = g  # a dict keeps the position of the first insertion
    return list(last.values())
