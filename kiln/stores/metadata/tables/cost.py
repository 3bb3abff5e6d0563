"""The tables of cost: the serving usage each server process records, and measured storage."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from kiln.stores.metadata.tables.base import STORAGE_KINDS, Base, one_of


class ServerInterval(Base):
    """What one server process used over one interval, whoever it served: its CPU (every
    thread: request workers, the event loop, the capture writer, shadows), its resident set and
    the vCPUs it reserves (``serving_cpus``; cost charges max(reserved, used) as OpenCost does).
    The unique (server, interval_start) makes a retried write land once."""

    __tablename__ = "server_intervals"
    __table_args__ = (
        sa.UniqueConstraint("server", "interval_start"),
        sa.Index("ix_server_intervals_end", "interval_end"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    server: Mapped[str] = mapped_column(sa.String(255))
    """``host:pid:start-unix-ms`` of the server process."""
    interval_start: Mapped[datetime]
    interval_end: Mapped[datetime]
    cpu_seconds: Mapped[float]
    rss_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    reserved_cpus: Mapped[float]
    requests: Mapped[int] = mapped_column(sa.BigInteger)
    pipelines: Mapped[list[str]] = mapped_column(sa.JSON())
    """The pipelines the process served (loaded) in the interval: idle cost is theirs."""


class ServingUsage(Base):
    """What one server process spent on one (pipeline, version, segment, stage) over one
    interval: ``cpu_seconds`` measured on the request's own thread (thread CPU clock),
    ``shared_cpu_seconds`` its share (by requests) of the process CPU outside requests."""

    __tablename__ = "serving_usage"
    __table_args__ = (
        sa.UniqueConstraint("server", "interval_start", "pipeline", "version", "segment", "stage"),
        sa.Index("ix_serving_usage_pipeline_start", "pipeline", "interval_start"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    server: Mapped[str] = mapped_column(sa.String(255))
    interval_start: Mapped[datetime]
    interval_end: Mapped[datetime]
    pipeline: Mapped[str] = mapped_column(sa.String(200))
    version: Mapped[int]
    segment: Mapped[str] = mapped_column(sa.String(200))
    stage: Mapped[str] = mapped_column(sa.String(16))
    requests: Mapped[int] = mapped_column(sa.BigInteger)
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    cpu_seconds: Mapped[float]
    shared_cpu_seconds: Mapped[float]


class StorageUsage(Base):
    """Bytes one pipeline keeps in one kind of store, as measured at ``measured_at`` (by `kiln
    cost`, `kiln gc` or the monitor); the newest measurement per (pipeline, kind) is current."""

    __tablename__ = "storage_usage"
    __table_args__ = (
        one_of("kind", STORAGE_KINDS),
        sa.Index("ix_storage_usage_pipeline_kind_at", "pipeline", "kind", "measured_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(16))
    measured_at: Mapped[datetime]
    bytes: Mapped[int] = mapped_column(sa.BigInteger)
    objects: Mapped[int] = mapped_column(sa.BigInteger)
