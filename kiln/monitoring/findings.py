"""What one monitor window found: typed rows per figure, and the findings that alerts consume.

Every part of a monitor pass returns these types: drift (:class:`FeatureDrift`,
:class:`SegmentTraffic`), live performance from delayed labels (:class:`PerformanceRow`,
:class:`LabelCounts`), latency and errors (:class:`LatencyRow`). The pass turns them into
:class:`Finding` s (one per judged figure, keyed by a stable ``check``), which alerts open and
resolve episodes from, and stores the whole :class:`WindowResult` as JSON per window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "LEVELS",
    "DriftReport",
    "FeatureDrift",
    "Finding",
    "LabelCounts",
    "LatencyRow",
    "Level",
    "PerformanceRow",
    "SegmentTraffic",
    "WindowResult",
    "worse",
]

Level = Literal["ok", "warn", "alert", "unjudged"]
LEVELS: dict[str, int] = {"unjudged": 0, "ok": 1, "warn": 2, "alert": 3}
"""Severity order: a figure too thin to judge is shown but never raises a state."""

ALL = "__all__"
"""The segment name of figures over the whole traffic of a version."""
PREDICTION = "__prediction__"
"""The feature name of the prediction's own distribution."""


def worse(a: str, b: str) -> str:
    """The more severe of two levels."""
    return a if LEVELS[a] >= LEVELS[b] else b


@dataclass(frozen=True)
class Finding:
    """One judged figure of a window. ``check`` is stable across windows (e.g.
    ``drift:temp:EWR``, ``performance:mae:JFK``, ``latency:p99``, ``errors``): consecutive
    windows over a threshold of the same check make an alert episode."""

    check: str
    kind: str
    """drift | performance | latency | errors | traffic | budget."""
    level: Level
    value: float | None
    threshold: float | None
    """The threshold that was passed (the alert's or the warn's), else the warn threshold."""
    message: str
    segment: str | None = None
    feature: str | None = None
    version: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureDrift:
    """One feature (or :data:`PREDICTION`) of one segment (or :data:`ALL`) of one version."""

    version: int
    segment: str
    feature: str
    kind: str
    """numeric | categorical."""
    statistic: str
    value: float | None
    """None when the segment has fewer rows than ``monitor.min_rows`` or the feature is
    missing from traffic."""
    level: Level
    rows: int
    rows_reference: int
    null_share: float
    null_share_reference: float
    outside_range_share: float | None = None
    """Numeric: share of the window's values below the training minimum or above its maximum."""
    unseen: dict[str, int] = field(default_factory=dict)
    """Categorical: values training never saw (the most frequent ones) and their counts."""
    missing: bool = False
    """No request of the window carried the feature."""
    warn: float | None = None
    alert: float | None = None


@dataclass(frozen=True)
class SegmentTraffic:
    version: int
    segment: str
    rows: int
    share: float
    share_reference: float
    """The segment's share of the training rows."""


@dataclass(frozen=True)
class DriftReport:
    features: list[FeatureDrift] = field(default_factory=list)
    traffic: list[SegmentTraffic] = field(default_factory=list)
    no_reference: list[int] = field(default_factory=list)
    """Versions in the window whose package records no training reference."""


@dataclass(frozen=True)
class PerformanceRow:
    """The live primary metric of one segment (or :data:`ALL`) of one version on the labelled
    requests of the window, against its holdout metric."""

    version: int
    segment: str
    metric: str
    value: float | None
    reference: float | None
    change: float | None
    """Relative worsening against ``reference`` (0.1: 10% worse; negative: better)."""
    level: Level
    labelled: int
    requests: int


@dataclass(frozen=True)
class LabelCounts:
    labelled: int = 0
    """Requests of the window with a label."""
    unlabelled: int = 0
    unknown: int = 0
    """Labels whose key matches no captured request (counted, never dropped)."""
    duplicates: int = 0
    """Labels sent again for a key (the newest one counts)."""


@dataclass(frozen=True)
class LatencyRow:
    version: int
    segment: str
    """A segment, or :data:`ALL`."""
    requests: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass
class WindowResult:
    pipeline: str
    start: datetime
    end: datetime
    rows: int = 0
    versions: list[int] = field(default_factory=list)
    drift: list[FeatureDrift] = field(default_factory=list)
    traffic: list[SegmentTraffic] = field(default_factory=list)
    performance: list[PerformanceRow] = field(default_factory=list)
    labels: LabelCounts | None = None
    latency: list[LatencyRow] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Capture files left out as corrupt, with their error."""
    notes: list[str] = field(default_factory=list)
    """What the window could not judge and why (no reference, no labels, ...)."""
    label_files: list[str] = field(default_factory=list)
    """The label files (names) its live performance read: a label file not among them makes
    the monitor compute its live performance again."""

    @property
    def state(self) -> str:
        """no_traffic, or the most severe level of its findings (ok when none judged)."""
        if self.rows == 0:
            return "no_traffic"
        level = "ok"
        for f in self.findings:
            level = worse(level, f.level)
        return "ok" if level == "unjudged" else level

    @property
    def worst(self) -> Finding | None:
        """The most severe finding, the largest value first among equals."""
        judged = [f for f in self.findings if f.level in ("warn", "alert")]
        if not judged:
            return None
        return max(judged, key=lambda f: (LEVELS[f.level], f.value or 0.0))

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["start"] = self.start.isoformat()
        doc["end"] = self.end.isoformat()
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> WindowResult:
        def rows(kind: type[Any], items: list[dict[str, Any]] | None) -> list[Any]:
            names = {f.name for f in fields(kind)}
            return [kind(**{k: v for k, v in i.items() if k in names}) for i in items or []]

        labels = doc.get("labels")
        return cls(
            pipeline=doc["pipeline"],
            start=datetime.fromisoformat(doc["start"]),
            end=datetime.fromisoformat(doc["end"]),
            rows=int(doc.get("rows", 0)),
            versions=list(doc.get("versions", [])),
            drift=rows(FeatureDrift, doc.get("drift")),
            traffic=rows(SegmentTraffic, doc.get("traffic")),
            performance=rows(PerformanceRow, doc.get("performance")),
            labels=None if labels is None else LabelCounts(**labels),
            latency=rows(LatencyRow, doc.get("latency")),
            findings=rows(Finding, doc.get("findings")),
            skipped=dict(doc.get("skipped", {})),
            notes=list(doc.get("notes", [])),
            label_files=list(doc.get("label_files", [])),
        )
