"""`kiln gc`: what retention lets go, and what is never deleted.

Deleted (``apply_gc``; ``plan_gc`` only lists):
- capture and label files older than the pipeline's ``capture.retention``;
- data snapshots of runs older than ``data.snapshot_retention``;
- orphans: content objects that no version and no run holds.
Retention is read from the config of the pipeline's newest run (``runs.config_text``): an edit
to kiln.yaml applies from the next run on. Unset retention keeps everything of that kind.

Never deleted, whatever the retention:
- the package (manifest and every artifact it names) of any registered version, whatever its
  stage: an archived version is a rollback target;
- the data snapshot of a production, canary, shadow, candidate or blocked version (gates
  re-check them), and the snapshot and stored segment models of a run that did not succeed
  (running, failed, interrupted: `kiln run --resume` restarts from them);
- the capture files holding the newest ``deploy.gates.replay.window`` production captures (the
  next replay and feature-availability gates read them, unless both are off), those since the
  shadow period of a version now in shadow or canary began (its shadow gate reads them), and,
  for every gate result of a non-archived version, those of the days from the first to the
  last capture it read (its evidence ``captures_from``, ``captures_until``; the day it was
  evaluated for a result without them): its evidence names their request ids;
- anything written less than ``grace`` ago; no snapshot or orphan at all while a run is running
  (a run writes or reuses content before it records it; a run recorded ``running`` whose
  process is dead, :func:`~kiln.registry.liveness.dead_reason`, is taken as interrupted), and a
  content object is put back when a run started, resumed, recorded or finished while it was
  being deleted.
A content object held by several owners is deleted only when every one of them lets it go.
``apply_gc`` plans again just before deleting and deletes only what both plans list, so a run
that started or recorded a reference in between keeps what it holds.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from kiln.config.loader import LoadedConfig
from kiln.errors import KilnError, NotFoundError, StoreError
from kiln.registry.inventory import Inventory, run_activity, take_inventory
from kiln.registry.usage import record_usage
from kiln.stores.artifacts import ObjectInfo
from kiln.stores.bundle import Stores
from kiln.stores.capture import read_captures

__all__ = ["GcItem", "GcPlan", "GcResult", "apply_gc", "plan_gc", "record_usage"]

LIVE_STAGES = frozenset({"production", "canary", "shadow", "candidate", "blocked"})
QUARANTINE = "gc-quarantine/"
"""Where `kiln gc --apply` moves content objects before deleting them (a folder per pass)."""
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
ORPHANS = "*"
"""The pipeline of orphans (nobody's) in plans, audit events and the JSON output."""


@dataclass(frozen=True, slots=True)
class GcItem:
    pipeline: str
    kind: str
    """``snapshots``, ``captures``, ``labels`` or ``orphans``."""
    key: str
    bytes: int
    why: str
    digest: str | None = None


@dataclass
class GcPlan:
    at: datetime
    grace: timedelta
    items: list[GcItem]
    notes: list[str] = field(default_factory=list)
    activity: tuple[Any, ...] = ()
    """The runs' activity (:func:`~kiln.registry.inventory.run_activity`) when planned."""

    def totals(self) -> dict[str, dict[str, dict[str, int]]]:
        """pipeline -> kind -> {"files", "bytes"}."""
        out: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
        for item in self.items:
            slot = out[item.pipeline].setdefault(item.kind, {"files": 0, "bytes": 0})
            slot["files"] += 1
            slot["bytes"] += item.bytes
        return dict(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "grace_seconds": self.grace.total_seconds(),
            "totals": self.totals(),
            "items": [asdict(i) for i in self.items],
            "notes": self.notes,
        }


@dataclass
class GcResult:
    plan: GcPlan
    deleted: list[GcItem]
    kept: list[GcItem]
    """Listed by the first plan, not by the re-check just before deleting (now needed)."""
    measured: dict[str, dict[str, tuple[int, int]]]


def plan_gc(
    stores: Stores,
    *,
    grace: timedelta,
    pipeline: str | None = None,
    now: datetime | None = None,
) -> GcPlan:
    """What `kiln gc --apply` would delete now; nothing is deleted."""
    if grace < timedelta(0):
        raise ValueError(f"grace must be >= 0, got {grace}")
    at = now or datetime.now(UTC)
    inv = take_inventory(stores)
    plan = GcPlan(at=at, grace=grace, items=[])
    configs = _configs(inv, plan.notes)
    young = at - grace
    plan.activity = inv.activity

    def fresh(info: ObjectInfo) -> bool:
        return info.modified is None or info.modified >= young

    if left := stores.content.store.stat(QUARANTINE):
        plan.notes.append(
            f"{len(left)} object(s) left in quarantine by an interrupted `kiln gc --apply`:"
            " the next --apply puts them back first"
        )
    running = sorted(r.id for r in inv.runs if r.live)
    for r in sorted(inv.runs, key=lambda r: r.id):
        if r.status == "running" and r.dead:
            plan.notes.append(
                f"run {r.id} of {r.pipeline!r} is recorded running but {r.dead}: taken as"
                " interrupted (its snapshot and models are kept for `kiln run --resume`)"
            )
    if running:
        plan.notes.append(
            "no snapshot or orphan is deleted while a run is running (a run may reuse a stored"
            f" object before it records it): {', '.join(running)}"
        )
    elif inv.unreadable:
        plan.items += _snapshots(inv, configs, at, fresh, pipeline)
        plan.notes.append(
            "no orphan is deleted: the manifests of "
            + ", ".join(inv.unreadable)
            + " cannot be read, so what they name is unknown"
        )
    else:
        plan.items += _snapshots(inv, configs, at, fresh, pipeline)
        held = inv.holders()
        for digest, info in sorted(inv.objects.items()):
            if pipeline is None and digest not in held and not fresh(info):
                why = "held by no version or run"
                plan.items.append(GcItem(ORPHANS, "orphans", info.key, info.size, why, digest))
    for name, loaded in configs.items():
        if pipeline is not None and name != pipeline:
            continue
        retention = loaded.config.capture.retention
        if retention is None:
            continue
        limit = at - retention
        plan.items += _captures(stores, inv, loaded, limit, fresh)
        for info in inv.labels.get(name, []):
            written = _label_time(info)
            if written is not None and written < limit and not fresh(info):
                plan.items.append(
                    GcItem(name, "labels", info.key, info.size, f"older than {_days(retention)}")
                )
    return plan


def apply_gc(stores: Stores, plan: GcPlan, *, actor: str, pipeline: str | None = None) -> GcResult:
    """Delete what ``plan`` lists and a fresh plan (same time and grace) still lists; audit it
    per pipeline (action ``gc``) and record new storage measurements.

    Content objects are first moved to a quarantine folder of this pass (no object is read),
    put back when a run acted meanwhile, and the quarantine is emptied at the end. What a
    crashed pass left in quarantine is put back first (it may be what a run found stored just
    before the crash; a later pass deletes it if nobody holds it). An error part-way (a
    StoreError on one delete) still audits and measures what was really deleted, then raises a
    StoreError saying so."""
    restored = _restore_quarantine(stores)
    again = plan_gc(stores, grace=plan.grace, pipeline=pipeline, now=plan.at)
    still = {i.key for i in again.items}
    deleted: list[GcItem] = []
    kept: list[GcItem] = []
    quarantined: dict[str, GcItem] = {}
    folder = f"{QUARANTINE}{plan.at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}/"
    content_ok = True
    try:
        for item in plan.items:
            if item.key not in still or (item.digest is not None and not content_ok):
                kept.append(item)
                continue
            if item.digest is None:
                if stores.content.store.delete(item.key):
                    deleted.append(item)
                continue
            gone = _quarantine(stores, item.digest, folder + item.digest, again.activity)
            if gone is None:  # a run did something since the plan: it may hold this object now
                content_ok = False
                kept.append(item)
            elif gone:
                quarantined[folder + item.digest] = item
    except KilnError as e:
        done = len(deleted) + len(quarantined)
        raise StoreError(
            f"kiln gc --apply stopped part-way, after deleting {done} of {len(plan.items)}"
            f" listed item(s): {e.message}",
            hint="what was deleted is audited and measured; fix the cause and run"
            " `kiln gc --apply` again (it lists what is left)",
        ) from e
    finally:
        for key, item in quarantined.items():  # emptied: each of them passed its re-check
            with contextlib.suppress(KilnError):  # left there: the next pass puts it back
                if stores.content.store.delete(key):
                    deleted.append(item)
        _audit(stores, plan, deleted, actor)
        measured = record_usage(stores, take_inventory(stores))
    if restored:
        plan.notes.append(
            f"{restored} object(s) that an interrupted `kiln gc --apply` left in quarantine"
            " were put back"
        )
    return GcResult(plan=plan, deleted=deleted, kept=kept, measured=measured)


def _audit(stores: Stores, plan: GcPlan, deleted: list[GcItem], actor: str) -> None:
    done = GcPlan(at=plan.at, grace=plan.grace, items=deleted)
    with stores.metadata.unit_of_work() as uow:
        for name, kinds in sorted(done.totals().items()):
            uow.audit.record(
                actor, "gc", name, reason=f"kiln gc --apply (grace {plan.grace})", details=kinds
            )


def _quarantine(stores: Stores, digest: str, key: str, activity: tuple[Any, ...]) -> bool | None:
    """Move one content object to ``key`` unless a run acted since ``activity`` was read (then
    None, before or after the move: after, it is moved back). A run that finds an object stored
    does not write it again, so the check comes before the move and again after it: a run that
    looks after the move writes the object itself. False when the object was not there."""
    if run_activity(stores) != activity:
        return None
    store = stores.content.store
    if not store.move(stores.content.key_of(digest), key):
        return False
    if run_activity(stores) != activity:
        store.move(key, stores.content.key_of(digest))
        return None
    return True


def _restore_quarantine(stores: Stores) -> int:
    """Put back what an interrupted pass left in quarantine (an object a run wrote again
    meanwhile is kept as the run wrote it); returns how many were put back."""
    store = stores.content.store
    restored = 0
    for info in store.stat(QUARANTINE):
        digest = info.key.rsplit("/", 1)[-1]
        target = stores.content.key_of(digest) if _DIGEST.match(digest) else None
        if target is None or store.exists(target):
            store.delete(info.key)
        elif store.move(info.key, target):
            restored += 1
    return restored


def _configs(inv: Inventory, notes: list[str]) -> dict[str, LoadedConfig]:
    configs = {}
    for name in inv.pipelines():
        try:
            loaded = inv.newest_config(name)
        except KilnError as e:
            notes.append(f"{name}: the config of its newest run does not load ({e}); kept all")
            continue
        if loaded is not None:
            configs[name] = loaded
        elif name in inv.captures or name in inv.labels:
            notes.append(f"{name}: no run records its retention; its captures and labels kept")
    return configs


def _snapshots(
    inv: Inventory,
    configs: dict[str, LoadedConfig],
    at: datetime,
    fresh: Any,
    pipeline: str | None,
) -> list[GcItem]:
    """Snapshots every holder lets go: no version holds them as a package, no live version
    and no unfinished run needs them, every run holding them is older than its retention."""
    needed: set[str] = set()
    for v in inv.versions:
        needed |= v.package
        if v.stage in LIVE_STAGES:
            run = next((r for r in inv.runs if r.id == v.run_id), None)
            needed |= {d for d in (v.data_digest, run and run.data_digest) if d}
    expired: dict[str, set[str]] = defaultdict(set)
    for r in inv.runs:
        if r.status != "succeeded":
            needed |= {d for d in (r.data_digest, *r.task_digests) if d}
            continue
        if r.data_digest is None:
            continue
        loaded = configs.get(r.pipeline)
        retention = loaded.config.data.snapshot_retention if loaded else None
        if retention is None or r.started_at >= at - retention:
            needed.add(r.data_digest)
        else:
            expired[r.data_digest].add(r.pipeline)
    items = []
    for digest, owners in sorted(expired.items()):
        info = inv.objects.get(digest)
        if digest in needed or info is None or fresh(info):
            continue
        if pipeline is not None and pipeline not in owners:
            continue
        for name in sorted(owners)[:1]:  # one deletion, under the first holder
            retention = configs[name].config.data.snapshot_retention
            why = f"runs older than {_days(retention)}" if retention else "expired"
            items.append(GcItem(name, "snapshots", info.key, info.size, why, digest))
    return items


def _captures(
    stores: Stores, inv: Inventory, loaded: LoadedConfig, limit: datetime, fresh: Any
) -> list[GcItem]:
    cfg = loaded.config
    files = inv.captures.get(cfg.name, [])
    # a day's folder is deleted only once all of it is older than the limit
    old = [(day, info) for day, info in files if _day_end(day) <= limit and not fresh(info)]
    if not old:
        return []
    keep: set[date] = set(inv.evidence_days.get(cfg.name, set()))
    shadow = inv.shadow_since.get(cfg.name)
    if shadow is not None:  # the shadow gate reads them (a day earlier: its clock skew)
        keep |= {day for day, _ in files if day >= shadow.date() - timedelta(days=1)}
    gates = cfg.deploy.gates  # both gates read the newest replay.window production captures
    if gates.replay.enabled or gates.feature_availability.enabled:
        first = _first_replay_day(stores, cfg.name, gates.replay.window)
        if first is not None:
            keep |= {day for day, _ in files if day >= first}
    why = f"older than {_days(cfg.capture.retention)}"
    return [
        GcItem(cfg.name, "captures", info.key, info.size, why)
        for day, info in old
        if day not in keep
    ]


def _first_replay_day(stores: Stores, pipeline: str, window: int) -> date | None:
    """The oldest day of the newest ``window`` production captures (what the next replay and
    feature-availability gates read, read the way they read them)."""
    root = _artifact_url(stores)
    try:
        table = read_captures(root, pipeline, stage="production", last=window)
    except NotFoundError:
        return None
    if table.num_rows == 0:
        return None
    first = min(table.column("ts").to_pylist())
    return (first if first.tzinfo else first.replace(tzinfo=UTC)).astimezone(UTC).date()


def _artifact_url(stores: Stores) -> str:
    url = getattr(stores.content.store, "url", None)
    if not isinstance(url, str):
        raise TypeError("kiln gc needs an fsspec artifact store (its captures live beside it)")
    return url


def _label_time(info: ObjectInfo) -> datetime | None:
    """A label file's name starts with the milliseconds it was received at."""
    name = info.key.rsplit("/", 1)[-1]
    head = name.split("-", 1)[0]
    if head.isdigit():
        return datetime.fromtimestamp(int(head) / 1000, UTC)
    return info.modified


def _day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def _days(d: timedelta | None) -> str:
    if d is None:
        return "-"
    if d.total_seconds() % 86400 == 0:
        return f"{int(d.total_seconds() // 86400)}d"
    return f"{d.total_seconds():g}s"
