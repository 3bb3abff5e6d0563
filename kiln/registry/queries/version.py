"""What the version page shows: one version with its per-segment metrics (and the fallback's on
the same rows), its lineage against the previous version, every gate's evidence with the failing
segments and requests pulled out, and its metrics beside the champion's.

One read unit of work, then at most two manifests (the version's and its champion's); the
previous version is compared by its run's kiln.yaml, which the unit of work already read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kiln.errors import NotFoundError
from kiln.registry.compare import FALLBACK, Comparison, Side, side_of
from kiln.registry.liveness import shown_status
from kiln.registry.queries.evidence import FailingRequest, FailingSegment, failing_of
from kiln.stores import MetadataStore, UnitOfWork
from kiln.stores.content import ContentStore
from kiln.stores.metadata.records import GateRecord, RunRecord, VersionRecord

__all__ = [
    "ChampionComparison",
    "FailingRequest",
    "FailingSegment",
    "GateEvidence",
    "Lineage",
    "SegmentMetrics",
    "VersionDetail",
    "failing_of",
    "parse_version",
    "version_detail",
]

_NUMBER = re.compile(r"^[vV]?(\d{1,9})$")
_MAX_SHOWN = 50
"""Failing segments or requests listed per gate (the counts are complete)."""


def parse_version(pipeline: str, text: str) -> int:
    """``3`` or ``v3`` as a version number; NotFoundError for anything else (a page's URL)."""
    m = _NUMBER.match(text.strip())
    if m is None or int(m.group(1)) < 1:
        raise NotFoundError(
            f"no version {text[:40]!r} of pipeline {pipeline[:200]!r}: a version is a number",
            hint="the pipeline page lists its versions (v1, v2, ...)",
        )
    return int(m.group(1))


@dataclass(frozen=True)
class SegmentMetrics:
    """One row of the segment table: the version's model there and the fallback's metrics on
    the same holdout rows."""

    segment: str
    model: str
    """``own``, ``fallback``, ``global`` (the fallback itself) or ``from vN`` (reused)."""
    note: str | None
    rows_train: int | None
    rows_holdout: int | None
    metrics: dict[str, float | None]
    fallback_metrics: dict[str, float | None]
    worse_than_fallback: bool = False
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None


@dataclass(frozen=True)
class Lineage:
    previous_version: int | None
    config_diff: list[str]
    """Unified diff of the previous version's kiln.yaml against this one's (empty: same)."""
    facts: dict[str, str]
    """version, run, config and data digests, rows, holdout, code revision, python, ..."""
    data_digest: str | None
    code_revision: str | None
    environment: dict[str, Any]


@dataclass(frozen=True)
class GateEvidence:
    gate: str
    status: str
    summary: str
    evaluated_at: datetime
    trigger: str
    champion_version: int | None
    failing_segments: list[FailingSegment]
    failing_requests: list[FailingRequest]
    evidence: dict[str, Any]
    history: list[GateRecord] = field(default_factory=list)
    """Every result of this gate for the version, oldest first (re-checks included)."""

    @property
    def evidence_json(self) -> str:
        return json.dumps(self.evidence, indent=2, sort_keys=True, default=str)


@dataclass(frozen=True)
class ChampionComparison:
    version: int
    stage: str
    why: str
    """``judged against it by its gates`` or ``in production now``."""
    run_id: str
    metrics: list[str]
    rows: list[tuple[str, dict[str, float | None], dict[str, float | None]]]
    """(segment, this version's metrics, the champion's), overall and fallback first."""
    deltas: dict[str, dict[str, float | None]]
    """Per segment: this version minus the champion, per metric."""


@dataclass(frozen=True)
class VersionDetail:
    pipeline: str
    owner: str
    record: VersionRecord
    run: RunRecord
    run_status: str
    primary: str | None
    metric_names: list[str]
    segments: list[SegmentMetrics]
    overall: dict[str, float | None]
    fallback_only: dict[str, float | None]
    lineage: Lineage
    gates: list[GateEvidence]
    champion: ChampionComparison | None

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def stage(self) -> str:
        return self.record.stage

    @property
    def failed_gates(self) -> list[GateEvidence]:
        return [g for g in self.gates if g.status == "failed"]


def version_detail(
    metadata: MetadataStore, content: ContentStore, pipeline: str, version: int
) -> VersionDetail:
    """Everything the version page shows (NotFoundError: no such pipeline or version)."""
    with metadata.read() as uow:
        owner = uow.pipelines.get(pipeline).owner
        record = uow.versions.get(pipeline, version)
        run = uow.runs.get(record.run_id)
        status = shown_status(run, uow.locks.get(pipeline))
        decided = uow.gates.for_version(pipeline, version)
        history = uow.gates.history(pipeline, version)
        previous = _previous(uow, pipeline, version)
        previous_run = None if previous is None else uow.runs.get(previous.run_id)
        champion, why = _champion(uow, record, decided)
        champion_run = None if champion is None else uow.runs.get(champion.run_id)
    side = side_of(content, pipeline, run, record)
    manifest = side.manifest or {}
    metrics = manifest.get("metrics") or {}
    primary = metrics.get("primary")
    overall = dict(metrics.get("overall") or {})
    names = [primary, *(n for n in overall if n != primary)] if primary else list(overall)
    return VersionDetail(
        pipeline=pipeline,
        owner=owner,
        record=record,
        run=run,
        run_status=status,
        primary=primary,
        metric_names=names,
        segments=_segments(manifest),
        overall=overall,
        fallback_only=dict(metrics.get("fallback_only") or {}),
        lineage=_lineage(side, previous, previous_run, manifest),
        gates=[_gate(g, [h for h in history if h.gate == g.gate]) for g in decided],
        champion=_comparison(content, side, champion=champion, champion_run=champion_run, why=why),
    )


def _previous(uow: UnitOfWork, pipeline: str, version: int) -> VersionRecord | None:
    """The version registered before ``version`` (numbers are allocated max+1)."""
    if version <= 1:
        return None
    try:
        found: VersionRecord = uow.versions.get(pipeline, version - 1)
    except NotFoundError:
        return None
    return found


def _champion(
    uow: UnitOfWork, record: VersionRecord, decided: list[GateRecord]
) -> tuple[VersionRecord | None, str]:
    """The version the gates judged this one against, else the production version."""
    judged = next((g.champion_version for g in decided if g.champion_version is not None), None)
    if judged is None:
        judged = next(
            (
                g.evidence.get("champion_version")
                for g in decided
                if isinstance(g.evidence.get("champion_version"), int)
            ),
            None,
        )
    if judged is not None and judged != record.version:
        try:
            return uow.versions.get(record.pipeline, judged), "judged against it by its gates"
        except NotFoundError:
            pass
    production = uow.versions.by_stage(record.pipeline, "production")
    if production and production[0].version != record.version:
        return production[0], "in production now"
    return None, ""


def _comparison(
    content: ContentStore,
    side: Side,
    *,
    champion: VersionRecord | None,
    champion_run: RunRecord | None,
    why: str,
) -> ChampionComparison | None:
    if champion is None or champion_run is None:
        return None
    pipeline = champion.pipeline
    other = side_of(content, pipeline, champion_run, champion)
    both = Comparison(pipeline, side, other, [], None)
    names: list[str] = []
    for s in (side, other):
        for values in s.metrics.values():
            names += [n for n in values if n not in names]
    primary = (side.manifest or {}).get("metrics", {}).get("primary")
    if primary in names:
        names.remove(primary)
        names.insert(0, primary)
    rows = [(seg, side.metrics.get(seg, {}), other.metrics.get(seg, {})) for seg in both.segments()]
    deltas = {
        seg: {n: _neg(both.delta(seg, n)) for n in names} for seg in both.segments()
    }  # delta() is b - a: the champion minus this version
    return ChampionComparison(
        champion.version, champion.stage, why, champion.run_id, names, rows, deltas
    )


def _neg(x: float | None) -> float | None:
    return None if x is None else -x


def _segments(manifest: dict[str, Any]) -> list[SegmentMetrics]:
    out: list[SegmentMetrics] = []
    for seg, ref in sorted((manifest.get("models") or {}).items()):
        usage = ref.get("usage") or {}
        versus = ref.get("vs_fallback") or {}
        reused = ref.get("from_version")
        out.append(
            SegmentMetrics(
                segment=seg,
                model=f"from v{reused}" if reused else "own",
                note=str(versus.get("reason")) if versus.get("verdict") == "not_judged" else None,
                rows_train=ref.get("rows_train"),
                rows_holdout=ref.get("rows_holdout"),
                metrics=dict(ref.get("metrics") or {}),
                fallback_metrics=dict(ref.get("fallback_metrics") or {}),
                worse_than_fallback=versus.get("verdict") == "worse",
                wall_seconds=usage.get("wall_seconds"),
                cpu_seconds=usage.get("cpu_seconds"),
                peak_memory_bytes=usage.get("peak_memory_bytes"),
            )
        )
    for seg, info in sorted((manifest.get("routed_to_fallback") or {}).items()):
        fb = dict(info.get("fallback_metrics") or {})
        out.append(
            SegmentMetrics(
                seg, "fallback", str(info.get("reason")), None, info.get("rows_holdout"),
                dict(info.get("own_metrics") or fb), fb,
            )
        )  # fmt: skip
    fallback = manifest.get("fallback") or {}
    if fallback:
        usage = fallback.get("usage") or {}
        reused = fallback.get("from_version")
        fb = dict(fallback.get("metrics") or {})
        out.append(
            SegmentMetrics(
                FALLBACK, f"global, from v{reused}" if reused else "global", None,
                fallback.get("rows_train"), fallback.get("rows_holdout"), fb, fb,
                wall_seconds=usage.get("wall_seconds"), cpu_seconds=usage.get("cpu_seconds"),
                peak_memory_bytes=usage.get("peak_memory_bytes"),
            )
        )  # fmt: skip
    return out


def _lineage(
    side: Side,
    previous: VersionRecord | None,
    previous_run: RunRecord | None,
    manifest: dict[str, Any],
) -> Lineage:
    diff: list[str] = []
    if previous is not None and previous_run is not None:
        before = Side(f"v{previous.version}", previous_run, previous)
        diff = Comparison(side.run.pipeline, before, side, [], None).config_diff()
    run = side.run
    return Lineage(
        previous_version=None if previous is None else previous.version,
        config_diff=diff,
        facts=side.facts(),
        data_digest=run.data_digest,
        code_revision=run.code_revision,
        environment=dict(manifest.get("environment") or {}),
    )


def _gate(record: GateRecord, history: list[GateRecord]) -> GateEvidence:
    segments, requests = failing_of(record.evidence or {})
    return GateEvidence(
        gate=record.gate,
        status=record.status,
        summary=record.summary,
        evaluated_at=record.evaluated_at,
        trigger=record.trigger,
        champion_version=record.champion_version,
        failing_segments=segments[:_MAX_SHOWN],
        failing_requests=requests[:_MAX_SHOWN],
        evidence=record.evidence or {},
        history=history,
    )
