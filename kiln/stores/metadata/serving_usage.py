"""Serving usage: what each server process used per interval, and per (pipeline, version,
segment, stage) within it. Written by the server (kiln.serving), read by serving cost.

A server writes one interval with its rows in one unit of work; the unique keys of both tables
make a retried write (the first one failed, or committed but its answer was lost) land once.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import (
    Repository,
    check_aware,
    field_names,
    insert_ignoring,
    to_record,
)

__all__ = [
    "ANSWERED_STAGES",
    "ServerIntervalRecord",
    "ServingUsageRecord",
    "ServingUsageRepository",
]

ANSWERED_STAGES = ("production", "canary")
"""Stages whose predictions answer requests; a shadow's copies are no traffic of their own:
they count no predictions and take no share of the shared or idle CPU (their own CPU is
the pipeline's cost, as stage ``shadow``)."""


@dataclass(frozen=True, slots=True)
class ServerIntervalRecord:
    server: str
    """``host:pid:start-unix-ms`` of the server process."""
    interval_start: datetime
    interval_end: datetime
    cpu_seconds: float
    """CPU of the whole process (every thread) over the interval."""
    rss_bytes: int
    reserved_cpus: float
    requests: int
    """Requests answered (production and canary; shadow copies are not counted)."""
    pipelines: list[str]

    @property
    def seconds(self) -> float:
        return (self.interval_end - self.interval_start).total_seconds()


@dataclass(frozen=True, slots=True)
class ServingUsageRecord:
    server: str
    interval_start: datetime
    interval_end: datetime
    pipeline: str
    version: int
    segment: str
    stage: str
    requests: int
    rows: int
    cpu_seconds: float
    """Measured on the requests' own threads."""
    shared_cpu_seconds: float
    """Its share (by requests) of the process CPU outside requests."""


_INTERVAL_KEY = ["server", "interval_start"]
_USAGE_KEY = ["server", "interval_start", "pipeline", "version", "segment", "stage"]


class ServingUsageRepository(Repository):
    """Rows of ``server_intervals`` and ``serving_usage`` (see their tables)."""

    _intervals = t.table_of(t.ServerInterval)
    _usage = t.table_of(t.ServingUsage)

    def record(
        self, interval: ServerIntervalRecord, rows: Sequence[ServingUsageRecord] = ()
    ) -> bool:
        """Write an interval and its rows; False (and nothing written) when this server's
        interval is already stored (a retry of a write that committed)."""
        check_aware("interval_start", interval.interval_start)
        check_aware("interval_end", interval.interval_end)
        if interval.interval_end < interval.interval_start:
            raise ValueError(
                f"interval of {interval.server} ends before it starts:"
                f" {interval.interval_start} .. {interval.interval_end}"
            )
        values = {name: getattr(interval, name) for name in field_names(ServerIntervalRecord)}
        stmt = insert_ignoring(self._session, self._intervals, [values], _INTERVAL_KEY)
        inserted = self._session.execute(stmt.returning(self._intervals.c.id)).one_or_none()
        if inserted is None:
            return False
        for row in rows:
            if (row.server, row.interval_start) != (interval.server, interval.interval_start):
                raise ValueError(f"usage row {row} is not of interval {interval}")
        if rows:
            usage = [
                {name: getattr(r, name) for name in field_names(ServingUsageRecord)} for r in rows
            ]
            self._session.execute(insert_ignoring(self._session, self._usage, usage, _USAGE_KEY))
        return True

    def intervals(
        self, since: datetime, until: datetime, *, pipeline: str | None = None
    ) -> builtins.list[ServerIntervalRecord]:
        """Intervals that ended in [since, until), oldest first; with ``pipeline``, those that
        served it (it was loaded, or it had requests)."""
        check_aware("since", since)
        check_aware("until", until)
        c = self._intervals.c
        stmt = (
            sa.select(self._intervals)
            .where(c.interval_end >= since, c.interval_end < until)
            .order_by(c.interval_end, c.server)
        )
        records = [to_record(ServerIntervalRecord, r) for r in self._session.execute(stmt)]
        if pipeline is None:
            return records
        with_rows = {
            (r.server, r.interval_start) for r in self.usage(since, until, pipeline=pipeline)
        }
        return [
            r
            for r in records
            if pipeline in r.pipelines or (r.server, r.interval_start) in with_rows
        ]

    def usage(
        self,
        since: datetime,
        until: datetime,
        *,
        pipeline: str | None = None,
        whole_intervals: bool = False,
    ) -> builtins.list[ServingUsageRecord]:
        """Usage rows of the intervals that ended in [since, until), oldest first; with
        ``pipeline``, its rows, or with ``whole_intervals`` every row of the intervals in which
        it has one (what splitting those intervals' cost needs)."""
        check_aware("since", since)
        check_aware("until", until)
        c = self._usage.c
        stmt = sa.select(self._usage).where(c.interval_end >= since, c.interval_end < until)
        if pipeline is not None and whole_intervals:
            mine = self._usage.alias("mine")
            stmt = stmt.where(
                sa.exists().where(
                    mine.c.server == c.server,
                    mine.c.interval_start == c.interval_start,
                    mine.c.pipeline == pipeline,
                )
            )
        elif pipeline is not None:
            stmt = stmt.where(c.pipeline == pipeline)
        stmt = stmt.order_by(c.interval_end, c.server, c.pipeline, c.version, c.segment, c.stage)
        return [to_record(ServingUsageRecord, r) for r in self._session.execute(stmt)]
