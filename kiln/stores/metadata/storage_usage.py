"""Measured storage: bytes and objects one pipeline keeps per kind of store, over time."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import Repository, check_aware, check_choice, to_record
from kiln.stores.metadata.tables.base import STORAGE_KINDS

__all__ = ["StorageUsageRecord", "StorageUsageRepository"]


@dataclass(frozen=True)
class StorageUsageRecord:
    pipeline: str
    kind: str
    measured_at: datetime
    bytes: int
    objects: int


class StorageUsageRepository(Repository):
    """Rows of ``storage_usage`` (see its table)."""

    def record(
        self, pipeline: str, kind: str, measured_at: datetime, nbytes: int, objects: int
    ) -> StorageUsageRecord:
        check_choice("kind", kind, STORAGE_KINDS)
        check_aware("measured_at", measured_at)
        if nbytes < 0 or objects < 0:
            raise ValueError(f"bytes and objects must be >= 0, got {nbytes} and {objects}")
        row = t.StorageUsage(
            pipeline=pipeline, kind=kind, measured_at=measured_at, bytes=nbytes, objects=objects
        )
        self._session.add(row)
        self._session.flush()
        return to_record(StorageUsageRecord, row)

    def measured_kinds(self) -> set[tuple[str, str]]:
        """The (pipeline, kind) pairs measured at least once."""
        q = sa.select(t.StorageUsage.pipeline, t.StorageUsage.kind).distinct()
        return {(p, k) for p, k in self._session.execute(q)}

    def list(
        self, pipeline: str | None = None, *, until: datetime | None = None
    ) -> builtins.list[StorageUsageRecord]:
        """Measurements taken before ``until`` (all when None), oldest first."""
        q = sa.select(t.StorageUsage)
        if pipeline is not None:
            q = q.where(t.StorageUsage.pipeline == pipeline)
        if until is not None:
            q = q.where(t.StorageUsage.measured_at < until)
        q = q.order_by(t.StorageUsage.measured_at, t.StorageUsage.id)
        return [to_record(StorageUsageRecord, r) for r in self._session.scalars(q)]
