"""Serving cost: the intervals each server process recorded, turned into CostItems.

Per interval of one server process (length L seconds), as OpenCost charges a container:

* charged CPU = max(reserved vCPUs x L, the process's CPU): a process pays for the vCPUs it
  reserves (``serving_cpus``) even while idle, and for what it used beyond them;
* charged memory = its resident set x L.

Each (pipeline, version, segment, stage) that had requests in the interval is charged its
measured request CPU plus its share of the shared CPU (``detail="requests"``, with
``predictions`` = the rows it answered; a shadow's copies answer nothing: 0). What is left,
the reserved-but-unused CPU and the memory, is ``detail="idle"``: split over the interval's
answered keys (production, canary) by requests, or equally over the
pipelines the process had loaded when it had no traffic (``pipeline="(none)"`` when it had
none loaded either, so that the items still add up to the servers' charge). $ per 1,000
predictions of a pipeline = its serving $ / its predictions x 1,000.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from kiln.monitoring.cost.model import GIB, CostItem, compute_usd
from kiln.settings import Prices
from kiln.stores.metadata import MetadataStore
from kiln.stores.metadata.serving_usage import (
    ANSWERED_STAGES,
    ServerIntervalRecord,
    ServingUsageRecord,
)

__all__ = ["NO_PIPELINE", "interval_charge", "interval_items", "serving_items"]

NO_PIPELINE = "(none)"
"""Charged the idle cost of a server process that had no pipeline loaded and no traffic."""


def serving_items(
    metadata: MetadataStore,
    prices: Prices,
    *,
    since: datetime,
    until: datetime,
    pipeline: str | None = None,
) -> list[CostItem]:
    """The serving cost of the intervals that ended in [since, until) (one pipeline's share
    with ``pipeline``: only the intervals that served it, with their rows, are read)."""
    query = None if pipeline == NO_PIPELINE else pipeline  # no server loads "(none)"
    with metadata.read() as uow:
        intervals = uow.serving_usage.intervals(since, until, pipeline=query)
        usage = uow.serving_usage.usage(since, until, pipeline=query, whole_intervals=True)
    rows: dict[tuple[str, datetime], list[ServingUsageRecord]] = defaultdict(list)
    for row in usage:
        rows[(row.server, row.interval_start)].append(row)
    items: list[CostItem] = []
    for interval in intervals:
        own = rows.get((interval.server, interval.interval_start), [])
        if query is not None and not own and interval.requests:
            continue  # it was loaded, others had the traffic: its idle share is 0
        for item in interval_items(interval, own, prices):
            if pipeline is None or item.pipeline == pipeline:
                items.append(item)
    return items


def interval_charge(
    interval: ServerIntervalRecord, rows: list[ServingUsageRecord]
) -> tuple[float, float]:
    """(charged vCPU-seconds, charged GiB-seconds) of one interval of one server process.

    The CPU is also at least what its keys were charged (a measurement read between two
    counters can exceed the process's own by a hair), so that the items add up to it."""
    seconds = interval.seconds
    used = sum(r.cpu_seconds + r.shared_cpu_seconds for r in rows)
    cpu = max(interval.reserved_cpus * seconds, interval.cpu_seconds, used)
    return cpu, interval.rss_bytes / GIB * seconds


def interval_items(
    interval: ServerIntervalRecord, rows: list[ServingUsageRecord], prices: Prices
) -> list[CostItem]:
    """The CostItems of one interval: ``requests`` per key, ``idle`` split by requests."""
    cpu, memory = interval_charge(interval, rows)
    at = interval.interval_end
    items: list[CostItem] = []
    used = 0.0
    for r in rows:
        seconds = r.cpu_seconds + r.shared_cpu_seconds
        used += seconds
        cpu_usd, _ = compute_usd(prices, seconds, 0.0, training=False)
        items.append(
            CostItem(
                pipeline=r.pipeline,
                kind="serving",
                detail="requests",
                at=at,
                usd=cpu_usd,
                cpu_usd=cpu_usd,
                memory_usd=0.0,
                version=r.version,
                segment=r.segment,
                cpu_seconds=seconds,
                memory_gib_seconds=0.0,
                predictions=r.rows if r.stage in ANSWERED_STAGES else 0,
            )
        )
    idle_cpu = max(0.0, cpu - used)
    shares = _idle_shares(interval, rows)
    for (name, version, segment), share in shares.items():
        idle_cpu_usd, idle_memory_usd = compute_usd(
            prices, idle_cpu * share, memory * share, training=False
        )
        items.append(
            CostItem(
                pipeline=name,
                kind="serving",
                detail="idle",
                at=at,
                usd=idle_cpu_usd + idle_memory_usd,
                cpu_usd=idle_cpu_usd,
                memory_usd=idle_memory_usd,
                version=version,
                segment=segment,
                cpu_seconds=idle_cpu * share,
                memory_gib_seconds=memory * share,
            )
        )
    return items


def _idle_shares(
    interval: ServerIntervalRecord, rows: list[ServingUsageRecord]
) -> dict[tuple[str, int | None, str | None], float]:
    """Who bears the idle cost: the answered keys by requests, else the loaded pipelines
    equally."""
    answered = [r for r in rows if r.stage in ANSWERED_STAGES]
    total = sum(r.requests for r in answered)
    shares: dict[tuple[str, int | None, str | None], float] = defaultdict(float)
    if total:
        for r in answered:
            shares[(r.pipeline, r.version, r.segment)] += r.requests / total
        return shares
    names = sorted(set(interval.pipelines)) or [NO_PIPELINE]
    for name in names:
        shares[(name, None, None)] += 1.0 / len(names)
    return shares
