"""What belongs to whom in the stores: every stored object, its size, and who holds it.

One listing per store (fsspec ``find(detail=True)``: sizes and write times, nothing is read),
then one read of the metadata. The order matters for `kiln gc` beside a running `kiln run`: a
run records itself (``runs`` row) before it writes any content, so an object seen in the
listing was written by a run that the metadata read after it already shows (running, or
finished with its references recorded).

Holders of a content object (``objects/<ab>/<digest>``):
- ``package`` of a version: its manifest and every artifact the manifest names (segment models
  and the fallback);
- ``snapshot`` of a run: its data snapshot (``runs.data_digest``) and, for a run that did not
  succeed, the segment models its tasks stored (``tasks.artifact_digest``; a resume reuses them).
An object with no holder is an orphan. Capture and label files belong to the pipeline their
path names (``captures/pipeline=<name>/date=<day>/…``, ``labels/pipeline=<name>/…``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kiln.config.loader import LoadedConfig, parse_config
from kiln.errors import IntegrityError, KilnError
from kiln.registry.liveness import dead_reason
from kiln.stores.artifacts import ObjectInfo
from kiln.stores.bundle import Stores
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import to_record
from kiln.stores.metadata.engine import READONLY, unreachable
from kiln.stores.metadata.records import LockRecord, RunRecord

__all__ = ["Inventory", "RunInfo", "VersionInfo", "run_activity", "take_inventory"]


@dataclass(frozen=True)
class VersionInfo:
    pipeline: str
    version: int
    stage: str
    run_id: str
    manifest_digest: str
    package: frozenset[str]
    """The manifest and every artifact it names (only the manifest when it cannot be read)."""
    data_digest: str | None


@dataclass(frozen=True)
class RunInfo:
    id: str
    pipeline: str
    status: str
    started_at: datetime
    data_digest: str | None
    task_digests: frozenset[str]
    """Segment models of a run that did not succeed (a resume reuses them)."""
    config_text: str
    config_path: str
    dead: str | None = None
    """Why a run recorded ``running`` is dead (:func:`~kiln.registry.liveness.dead_reason`:
    its lock is gone or taken, its heartbeat stale, its process gone); None when alive."""

    @property
    def live(self) -> bool:
        """Recorded running and its process alive."""
        return self.status == "running" and self.dead is None


@dataclass
class Inventory:
    objects: dict[str, ObjectInfo]
    """Content objects by digest."""
    captures: dict[str, list[tuple[date, ObjectInfo]]]
    """Capture files per pipeline, with the UTC day of their folder."""
    labels: dict[str, list[ObjectInfo]]
    versions: list[VersionInfo]
    runs: list[RunInfo]
    evidence_days: dict[str, set[date]]
    """Per pipeline, the capture days that gate results of non-archived versions read: from
    their evidence's ``captures_from`` to ``captures_until`` (the day a result was evaluated
    when its evidence does not say)."""
    shadow_since: dict[str, datetime] = field(default_factory=dict)
    """Per pipeline, when the shadow period of a version now in shadow or canary started (the
    shadow gate reads the captures since then)."""
    activity: tuple[Any, ...] = ()
    """:func:`run_activity` when the metadata was read."""
    unreadable: list[str] = field(default_factory=list)
    """Manifests that could not be read (their artifacts are unknown, so nothing is orphan)."""

    def pipelines(self) -> list[str]:
        names = {v.pipeline for v in self.versions} | {r.pipeline for r in self.runs}
        return sorted(names | set(self.captures) | set(self.labels))

    def holders(self) -> dict[str, set[tuple[str, str]]]:
        """digest -> {(pipeline, kind)} with kind ``packages`` or ``snapshots``."""
        held: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for v in self.versions:
            for digest in v.package:
                held[digest].add((v.pipeline, "packages"))
        for r in self.runs:
            for owned in (r.data_digest, *r.task_digests):
                if owned:
                    held[owned].add((r.pipeline, "snapshots"))
        return held

    def newest_config(self, pipeline: str) -> LoadedConfig | None:
        """The kiln.yaml of the pipeline's newest run (what its retention is), or None."""
        runs = [r for r in self.runs if r.pipeline == pipeline]
        if not runs:
            return None
        newest = max(runs, key=lambda r: r.started_at)
        return parse_config(newest.config_text, Path(newest.config_path or "kiln.yaml"))

    def held(self) -> dict[str, dict[str, list[ObjectInfo]]]:
        """pipeline -> kind -> the objects it keeps. Content two pipelines hold is counted for
        each (each would pay for it alone); orphans are left out (nobody's)."""
        out: dict[str, dict[str, list[ObjectInfo]]] = {
            p: {k: [] for k in ("packages", "snapshots", "captures", "labels")}
            for p in self.pipelines()
        }
        for digest, holders in self.holders().items():
            info = self.objects.get(digest)
            if info is None:
                continue
            # a digest both a package and a snapshot of one pipeline is counted once: as package
            kinds: dict[str, str] = {}
            for pipeline, kind in sorted(holders):
                kinds[pipeline] = "packages" if "packages" in (kinds.get(pipeline), kind) else kind
            for pipeline, kind in kinds.items():
                out[pipeline][kind].append(info)
        for pipeline, files in self.captures.items():
            out[pipeline]["captures"] = [i for _, i in files]
        for pipeline, infos in self.labels.items():
            out[pipeline]["labels"] = list(infos)
        return out

    def measure(self) -> dict[str, dict[str, tuple[int, int]]]:
        """pipeline -> kind -> (bytes, objects) of :meth:`held`."""
        return {
            p: {k: (sum(i.size for i in infos), len(infos)) for k, infos in kinds.items()}
            for p, kinds in self.held().items()
        }


def take_inventory(stores: Stores) -> Inventory:
    """List the stores, then read the metadata (see the module's note on the order)."""
    content = stores.content
    objects = {str(content.digest_of(i.key)): i for i in content.stat()}
    captures: dict[str, list[tuple[date, ObjectInfo]]] = defaultdict(list)
    for info in content.store.stat("captures/pipeline="):
        found = _capture_file(info.key)
        if found is not None:
            captures[found[0]].append((found[1], info))
    labels: dict[str, list[ObjectInfo]] = defaultdict(list)
    for info in content.store.stat("labels/pipeline="):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2].endswith(".parquet") and not parts[2].startswith("."):
            labels[parts[1].removeprefix("pipeline=")].append(info)

    engine = stores.metadata.engine.execution_options(**{READONLY: True})
    try:
        with engine.connect() as conn, conn.begin():
            version_rows = conn.execute(sa.select(t.ModelVersion)).all()
            run_rows = conn.execute(sa.select(t.Run)).all()
            lock_rows = conn.execute(sa.select(t.PipelineLock)).all()
            task_rows = conn.execute(
                sa.select(t.Task.run_id, t.Task.artifact_digest)
                .join(t.Run, t.Run.id == t.Task.run_id)
                .where(t.Run.status != "succeeded", t.Task.artifact_digest.is_not(None))
            ).all()
            gate_rows = conn.execute(
                sa.select(t.GateResult.pipeline, t.GateResult.evaluated_at, t.GateResult.evidence)
                .join(
                    t.ModelVersion,
                    sa.and_(
                        t.ModelVersion.pipeline == t.GateResult.pipeline,
                        t.ModelVersion.version == t.GateResult.version,
                    ),
                )
                .where(t.ModelVersion.stage != "archived")
            ).all()
            shadow_rows = conn.execute(
                sa.select(t.ModelVersion.pipeline, sa.func.min(t.Deployment.at))
                .join(
                    t.Deployment,
                    sa.and_(
                        t.Deployment.pipeline == t.ModelVersion.pipeline,
                        t.Deployment.version == t.ModelVersion.version,
                        t.Deployment.action.in_(("shadow", "canary")),
                    ),
                )
                .where(t.ModelVersion.stage.in_(("shadow", "canary")))
                .group_by(t.ModelVersion.pipeline)
            ).all()
            activity = _activity(conn)
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise unreachable(stores.metadata.url, e) from e

    tasks: dict[str, set[str]] = defaultdict(set)
    for run_id, digest in task_rows:
        if digest:
            tasks[run_id].add(digest)
    locks = {row.pipeline: to_record(LockRecord, row) for row in lock_rows}
    runs = [
        RunInfo(
            id=r.id,
            pipeline=r.pipeline,
            status=r.status,
            started_at=r.started_at,
            data_digest=r.data_digest,
            task_digests=frozenset(tasks.get(r.id, ())),
            config_text=r.config_text,
            config_path=r.config_path,
            dead=dead_reason(to_record(RunRecord, r), locks.get(r.pipeline)),
        )
        for r in run_rows
    ]
    unreadable: list[str] = []
    versions = []
    for v in version_rows:
        package = _package(stores, v.manifest_digest, f"version {v.version} of {v.pipeline!r}")
        if package is None:
            unreadable.append(f"version {v.version} of {v.pipeline!r}")
        versions.append(
            VersionInfo(
                pipeline=v.pipeline,
                version=v.version,
                stage=v.stage,
                run_id=v.run_id,
                manifest_digest=v.manifest_digest,
                package=package or frozenset({v.manifest_digest}),
                data_digest=(v.lineage or {}).get("data_digest"),
            )
        )
    shadow_since: dict[str, datetime] = {}
    for v in version_rows:  # a version set to shadow without a deployment event
        if v.stage in ("shadow", "canary"):
            earlier = shadow_since.get(v.pipeline, v.stage_changed_at)
            shadow_since[v.pipeline] = min(earlier, v.stage_changed_at)
    for pipeline, at in shadow_rows:
        if at is not None:
            shadow_since[pipeline] = min(shadow_since.get(pipeline, at), at)
    evidence: dict[str, set[date]] = defaultdict(set)
    for pipeline, at, found in gate_rows:
        evidence[pipeline] |= _evidence_days(at, found)
    return Inventory(
        objects=objects, captures=dict(captures), labels=dict(labels), versions=versions,
        runs=runs, evidence_days=dict(evidence), unreadable=unreadable, activity=activity,
        shadow_since=shadow_since,
    )  # fmt: skip


def run_activity(stores: Stores) -> tuple[Any, ...]:
    """Changes whenever a run starts, resumes, records its snapshot or finishes: `kiln gc`
    compares it before and after deleting a content object (a run may reuse an object it
    finds stored, before recording that it holds it)."""
    engine = stores.metadata.engine.execution_options(**{READONLY: True})
    try:
        with engine.connect() as conn, conn.begin():
            return _activity(conn)
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise unreachable(stores.metadata.url, e) from e


def _activity(conn: sa.Connection) -> tuple[Any, ...]:
    r = t.Run
    row = conn.execute(
        sa.select(
            sa.func.count(r.id),
            sa.func.count(r.data_digest),
            sa.func.sum(r.attempt),
            sa.func.max(r.started_at),
            sa.func.max(r.finished_at),
            sa.func.count(r.id).filter(r.status == "running"),
        )
    ).one()
    return tuple(row)


def _evidence_days(evaluated_at: datetime, evidence: Any) -> set[date]:
    """The UTC days of the captures a gate result read (its evidence's ``captures_from`` ..
    ``captures_until``), else the day it was evaluated on (a result recorded before gates said,
    or of a gate that reads no capture)."""
    span = []
    if isinstance(evidence, dict):
        for name in ("captures_from", "captures_until"):
            try:
                span.append(_utc_day(datetime.fromisoformat(str(evidence[name]))))
            except (KeyError, ValueError):
                break
    if len(span) != 2 or span[0] > span[1]:
        return {_utc_day(evaluated_at)}
    first, last = span
    return {first + timedelta(days=n) for n in range((last - first).days + 1)}


def _utc_day(moment: datetime) -> date:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).date()


def _capture_file(key: str) -> tuple[str, date] | None:
    parts = key.split("/")
    if len(parts) != 4 or not parts[3].endswith(".parquet") or parts[3].startswith("."):
        return None
    if not parts[2].startswith("date="):
        return None
    try:
        day = date.fromisoformat(parts[2].removeprefix("date="))
    except ValueError:
        return None
    return parts[1].removeprefix("pipeline="), day


def _package(stores: Stores, digest: str, label: str) -> frozenset[str] | None:
    """The digests of a package: its manifest and what it names; None when unreadable."""
    try:
        manifest: dict[str, Any] = orjson.loads(stores.content.get(digest, what=label))
    except (IntegrityError, orjson.JSONDecodeError):
        return None
    except KilnError:
        return None
    refs = [*(manifest.get("models") or {}).values(), manifest.get("fallback") or {}]
    named = {str(r["sha256"]) for r in refs if isinstance(r, dict) and r.get("sha256")}
    return frozenset({digest, *named})
