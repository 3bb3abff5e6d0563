"""What `kiln compare PIPELINE A B` shows: two versions (or runs) side by side — metrics per
segment with the change, the config diff, the data snapshot, the code and the environment.

A and B name a version (``3``, ``v3``), the production version (``production``) or a run
(``run:ID``, or a bare run id): a run that registered nothing (``kiln run --step train``) is
compared through the metrics its tasks recorded.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from kiln.errors import KilnError, NotFoundError
from kiln.pipeline.plan import FALLBACK_LABEL, segment_label
from kiln.pipeline.split import Split
from kiln.stores import MetadataStore
from kiln.stores.content import ContentStore
from kiln.stores.metadata.records import RunRecord, TaskRecord, VersionRecord

__all__ = ["FALLBACK", "OVERALL", "Comparison", "Side", "compare", "side_of"]

OVERALL = "(overall)"
FALLBACK = FALLBACK_LABEL
_VERSION = re.compile(r"^v?(\d+)$")


@dataclass(frozen=True)
class Side:
    label: str
    run: RunRecord
    version: VersionRecord | None = None
    manifest: dict[str, Any] | None = None
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Per segment (and ``(overall)``, ``(fallback)``): each metric on that side's holdout."""
    notes: dict[str, str] = field(default_factory=dict)
    """Per segment: why it has no model of its own (served by the fallback)."""

    def facts(self) -> dict[str, str]:
        """The lineage lines shown side by side."""
        r, v, m = self.run, self.version, self.manifest or {}
        lineage = m.get("lineage", {})
        rows = lineage.get("rows") or r.rows or {}
        env = m.get("environment", {})
        partial = lineage.get("partial")
        return {
            "version": f"v{v.version} ({v.stage})" if v else "- (nothing registered)",
            "experiment": (v.experiment if v else None) or "-",
            "run": f"{r.id} ({r.status}, {r.started_at:%Y-%m-%d %H:%M})",
            "config sha256": r.config_digest[:12],
            "data sha256": (r.data_digest or "-")[:12],
            "rows": ", ".join(f"{k} {n}" for k, n in rows.items() if n) or "-",
            "holdout": Split.from_lineage(lineage).describe() if lineage else "-",
            "code revision": r.code_revision or "-",
            "python": str(env.get("python", "-")),
            "packages": " ".join(f"{k}={x}" for k, x in sorted(env.get("packages", {}).items()))
            or "-",
            "partial": (
                f"retrained {', '.join(partial['retrained'])} on v{partial['base_version']}"
                if partial
                else "-"
            ),
        }


@dataclass(frozen=True)
class Comparison:
    pipeline: str
    a: Side
    b: Side
    metrics: list[str]
    primary: str | None

    def segments(self) -> list[str]:
        keys = set(self.a.metrics) | set(self.b.metrics)
        firsts = [k for k in (OVERALL, FALLBACK) if k in keys]
        return firsts + sorted(keys - {OVERALL, FALLBACK})

    def delta(self, segment: str, metric: str) -> float | None:
        x = self.a.metrics.get(segment, {}).get(metric)
        y = self.b.metrics.get(segment, {}).get(metric)
        return None if x is None or y is None else y - x

    def config_diff(self) -> list[str]:
        return list(
            difflib.unified_diff(
                self.a.run.config_text.splitlines(),
                self.b.run.config_text.splitlines(),
                fromfile=self.a.label,
                tofile=self.b.label,
                lineterm="",
            )
        )


def compare(
    metadata: MetadataStore, content: ContentStore, pipeline: str, a: str, b: str
) -> Comparison:
    first, second = _side(metadata, content, pipeline, a), _side(metadata, content, pipeline, b)
    names: list[str] = []
    for side in (first, second):
        for values in side.metrics.values():
            names += [n for n in values if n not in names]
    primary = next((s.manifest["metrics"]["primary"] for s in (first, second) if s.manifest), None)
    if primary in names:
        names.remove(primary)
        names.insert(0, primary)
    return Comparison(pipeline, first, second, names, primary)


def _side(metadata: MetadataStore, content: ContentStore, pipeline: str, ref: str) -> Side:
    text = ref.strip()
    with metadata.read() as uow:
        if text == "production":
            found = uow.versions.by_stage(pipeline, "production")
            if not found:
                raise NotFoundError(
                    f"pipeline {pipeline!r} has no production version to compare",
                    hint="`kiln models list` shows the versions; compare two of them by number",
                )
            version: VersionRecord | None = found[0]
        elif m := _VERSION.match(text):
            version = uow.versions.get(pipeline, int(m.group(1)))
        else:
            run = uow.runs.get(text.removeprefix("run:"))
            if run.pipeline != pipeline:
                raise KilnError(
                    f"run {run.id} belongs to pipeline {run.pipeline!r}, not {pipeline!r}",
                    hint=f"`kiln compare {run.pipeline} ...` compares it",
                )
            version = uow.versions.for_run(run.id)
        if version is not None:
            run = uow.runs.get(version.run_id)
        tasks = uow.tasks.for_run(run.id) if version is None else []
    return side_of(content, pipeline, run, version, tasks)


def side_of(
    content: ContentStore,
    pipeline: str,
    run: RunRecord,
    version: VersionRecord | None,
    tasks: list[TaskRecord] | None = None,
) -> Side:
    """One side from records already read: a version's (its manifest is read from
    ``content``), or a run's that registered nothing (the metrics its ``tasks`` recorded)."""
    if version is None:
        tasks = tasks or []
        metrics = {
            segment_label(t.segment): dict(t.metrics or {})
            for t in tasks
            if t.status == "succeeded"
        }
        return Side(f"run {run.id}", run, metrics=metrics)
    label = f"{pipeline} v{version.version}"
    manifest = json.loads(content.get(version.manifest_digest, what=f"the manifest of {label}"))
    metrics = {seg: dict(ref["metrics"] or {}) for seg, ref in manifest["models"].items()}
    notes = {}
    for seg, info in manifest["routed_to_fallback"].items():
        metrics[seg] = dict(info["fallback_metrics"])
        notes[seg] = f"fallback: {info['reason']}"
    metrics[FALLBACK] = dict(manifest["fallback"]["metrics"] or {})
    metrics[OVERALL] = dict(manifest["metrics"]["overall"])
    return Side(f"v{version.version}", run, version, manifest, metrics, notes)
