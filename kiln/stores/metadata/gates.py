"""Gate results: the latest outcome of each gate of each version, with its evidence."""

from __future__ import annotations

import builtins
from typing import Any

import sqlalchemy as sa

from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import Repository, check_choice, now, to_record, upsert
from kiln.stores.metadata.records import GateRecord, GateStatus

__all__ = ["GateRepository"]


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
    ) -> GateRecord:
        """Store the gate's outcome for the version; a re-evaluation replaces the earlier one."""
        check_choice("status", status, t.GATE_STATUSES)
        values = {
            "pipeline": pipeline,
            "version": version,
            "gate": gate,
            "status": status,
            "summary": summary,
            "evidence": evidence,
            "evaluated_at": now(),
        }
        changes = {k: values[k] for k in ("status", "summary", "evidence", "evaluated_at")}
        row = upsert(self._session, self._table, values, ["pipeline", "version", "gate"], changes)
        return to_record(GateRecord, row)

    def for_version(self, pipeline: str, version: int) -> builtins.list[GateRecord]:
        stmt = (
            sa.select(t.GateResult)
            .where(t.GateResult.pipeline == pipeline, t.GateResult.version == version)
            .order_by(t.GateResult.id)
        )
        return [to_record(GateRecord, g) for g in self._session.scalars(stmt)]
