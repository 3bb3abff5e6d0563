"""Storage measurements: what each pipeline keeps, per kind, recorded in ``storage_usage``
(after every `kiln gc --apply`, and by `kiln cost` when it measures storage)."""

from __future__ import annotations

from datetime import UTC, datetime

from kiln.registry.inventory import Inventory
from kiln.stores.artifacts import ObjectInfo
from kiln.stores.bundle import Stores

__all__ = ["record_usage"]


def record_usage(
    stores: Stores, inventory: Inventory, *, pipeline: str | None = None
) -> dict[str, dict[str, tuple[int, int]]]:
    """Record one storage_usage row per (pipeline, kind) of ``inventory``; returns what it
    recorded: pipeline -> kind -> (bytes, objects). The first measurement of a (pipeline,
    kind) is preceded by its history rebuilt from the objects' write times (one row per hour
    in which objects were written, and none held from the pipeline's creation to its first
    object), so that storage before it is charged, not unknown. Objects deleted before the
    first measurement are not in that history (nothing says they were there)."""
    at = datetime.now(UTC)
    held = inventory.held()
    if pipeline is not None:
        held = {pipeline: held.get(pipeline) or {}}
    measured = {
        name: {kind: (sum(i.size for i in infos), len(infos)) for kind, infos in kinds.items()}
        for name, kinds in held.items()
    }
    with stores.metadata.unit_of_work() as uow:
        known = uow.storage_usage.measured_kinds()
        born = {p.name: p.created_at for p in uow.pipelines.list()}
        for name, kinds in held.items():
            for kind, infos in kinds.items():
                if (name, kind) not in known:
                    history = _history(infos, at)
                    start = born.get(name)
                    if start is not None and (not history or start < history[0][0]):
                        # before its first object the pipeline kept nothing of this kind
                        uow.storage_usage.record(name, kind, min(start, at), 0, 0)
                    for hour, nbytes, objects in history:
                        uow.storage_usage.record(name, kind, hour, nbytes, objects)
                nbytes, objects = measured[name][kind]
                uow.storage_usage.record(name, kind, at, nbytes, objects)
    return measured


def _history(infos: list[ObjectInfo], at: datetime) -> list[tuple[datetime, int, int]]:
    """(time, bytes, objects) held from the first write of each hour in which objects were
    written, before ``at``: the objects still here, by their write time (unknown times are
    left out). One row per hour at most, however many objects."""
    written: dict[datetime, tuple[datetime, int, int]] = {}
    for info in infos:
        if info.modified is None or info.modified >= at:
            continue
        when = info.modified.astimezone(UTC)
        hour = when.replace(minute=0, second=0, microsecond=0)
        first, size, count = written.get(hour, (when, 0, 0))
        written[hour] = (min(first, when), size + info.size, count + 1)
    out, nbytes, objects = [], 0, 0
    for hour in sorted(written):
        first, size, count = written[hour]
        nbytes, objects = nbytes + size, objects + count
        out.append((first, nbytes, objects))
    return out
