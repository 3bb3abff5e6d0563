"""Storage cost: bytes each pipeline keeps (packages, snapshots, captures, labels) → money.

``measure_storage`` lists the stores (sizes from one fsspec listing, nothing read) and records
one ``storage_usage`` row per (pipeline, kind); `kiln gc` records them too after deleting.
``storage_items`` prorates the measurements over a period as a step function: a measurement
holds from when it was taken until the next one of the same (pipeline, kind), and the last one
until the end of the period or now, whichever is first (cost already incurred, not forecast).
Before a pipeline's first measurement its storage is unknown (an item with ``usd=None``) from
the pipeline's creation on; before its creation it kept nothing, so nothing is charged.
Content that two pipelines hold (the same digest) is charged to each: either one alone would
keep it, and splitting it would change one pipeline's cost when another is deleted.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import sqlalchemy as sa

from kiln.monitoring.cost.model import MONTH_SECONDS, CostItem, storage_usd
from kiln.registry.gc import record_usage
from kiln.registry.inventory import take_inventory
from kiln.settings import Prices, Settings
from kiln.stores.bundle import Stores
from kiln.stores.metadata import MetadataStore
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.storage_usage import StorageUsageRecord

__all__ = ["measure_storage", "newest_measurement", "storage_items"]


def measure_storage(
    stores: Stores, settings: Settings, *, pipeline: str | None = None
) -> dict[str, dict[str, int]]:
    """pipeline -> kind -> bytes now, recorded in storage_usage. ``settings`` names the stores
    ``stores`` was opened on (the artifact root holds content, captures and labels)."""
    del settings  # the stores were opened from them; kept for the shared signature
    measured = record_usage(stores, take_inventory(stores), pipeline=pipeline)
    return {name: {kind: b for kind, (b, _) in kinds.items()} for name, kinds in measured.items()}


def newest_measurement(metadata: MetadataStore, pipeline: str) -> datetime | None:
    """When ``pipeline``'s storage was last measured (None: never); one indexed query."""
    column = t.StorageUsage.measured_at
    query = sa.select(sa.func.max(column)).where(t.StorageUsage.pipeline == pipeline)
    with metadata.engine.connect() as conn:
        found = conn.execute(query).scalar_one_or_none()
    if found is None:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def storage_items(
    metadata: MetadataStore,
    prices: Prices,
    *,
    since: datetime,
    until: datetime,
    pipeline: str | None = None,
) -> list[CostItem]:
    """kind="storage", detail packages|snapshots|captures|labels: one item per span of the
    period that one measurement covers (``at`` = the span's start), and one unknown item
    (``usd=None``) for the span between the pipeline's creation and its first measurement."""
    if since.utcoffset() is None or until.utcoffset() is None:
        raise ValueError("since and until must be timezone-aware (UTC)")
    end = min(until, datetime.now(UTC))
    with metadata.read() as uow:
        rows = uow.storage_usage.list(pipeline, until=end)
        created = {p.name: p.created_at for p in uow.pipelines.list()}
    series: dict[tuple[str, str], list[StorageUsageRecord]] = defaultdict(list)
    for row in rows:
        series[(row.pipeline, row.kind)].append(row)
    items: list[CostItem] = []
    for (name, kind), measured in sorted(series.items()):
        born = created.get(name)
        first = measured[0].measured_at
        if born is not None and max(born, since) < min(first, end):
            items.append(
                CostItem(pipeline=name, kind="storage", detail=kind, at=max(born, since), usd=None)
            )
        for row, nxt in zip(measured, [*measured[1:], None], strict=True):
            start = max(row.measured_at, since)
            stop = min(nxt.measured_at if nxt else end, end)
            if stop <= start:
                continue
            usd = storage_usd(prices, row.bytes, (stop - start).total_seconds())
            items.append(
                CostItem(
                    pipeline=name,
                    kind="storage",
                    detail=kind,
                    at=start,
                    usd=usd,
                    storage_usd=usd,
                    month_rate_usd=storage_usd(prices, row.bytes, MONTH_SECONDS),
                )
            )
    return items
