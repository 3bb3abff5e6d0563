"""Typed read queries that the CLI and the UI share: frozen dataclasses in and out, one read
unit of work each, bounded work at any registry size (paged in SQL, batched per page); one
module per page's data."""

from kiln.registry.queries.catalogue import (
    MONITOR_STATES,
    CatalogueFilter,
    CataloguePage,
    CatalogueRow,
    GateOutcome,
    LastRun,
    MonitorState,
    catalogue,
)
from kiln.registry.queries.evidence import (
    FailingRequest,
    FailingSegment,
    failing_of,
)
from kiln.registry.queries.monitoring import (
    HEATMAP_LOOKBACK,
    MAX_WINDOWS,
    MonitoringRows,
    WindowRow,
    monitoring_rows,
)
from kiln.registry.queries.pipeline import (
    MAX_AUDIT,
    MAX_MANIFESTS,
    MAX_VERSIONS,
    PipelineVersion,
    PipelineView,
    SegmentPoint,
    pipeline_audit,
    pipeline_view,
)
from kiln.registry.queries.run import (
    LOG_CHARS,
    TASKS_SHOWN,
    TIMELINE_MAX,
    RunDetail,
    Span,
    StepLine,
    TaskLine,
    Timeline,
    run_detail,
    task_log,
)
from kiln.registry.queries.version import (
    ChampionComparison,
    GateEvidence,
    Lineage,
    SegmentMetrics,
    VersionDetail,
    parse_version,
    version_detail,
)
from kiln.registry.queries.versions import (
    VersionRow,
    VersionsPage,
    versions_page,
)

__all__ = [
    "HEATMAP_LOOKBACK",
    "LOG_CHARS",
    "MAX_AUDIT",
    "MAX_MANIFESTS",
    "MAX_VERSIONS",
    "MAX_WINDOWS",
    "MONITOR_STATES",
    "TASKS_SHOWN",
    "TIMELINE_MAX",
    "CatalogueFilter",
    "CataloguePage",
    "CatalogueRow",
    "ChampionComparison",
    "FailingRequest",
    "FailingSegment",
    "GateEvidence",
    "GateOutcome",
    "LastRun",
    "Lineage",
    "MonitorState",
    "MonitoringRows",
    "PipelineVersion",
    "PipelineView",
    "RunDetail",
    "SegmentMetrics",
    "SegmentPoint",
    "Span",
    "StepLine",
    "TaskLine",
    "Timeline",
    "VersionDetail",
    "VersionRow",
    "VersionsPage",
    "WindowRow",
    "catalogue",
    "failing_of",
    "monitoring_rows",
    "parse_version",
    "pipeline_audit",
    "pipeline_view",
    "run_detail",
    "task_log",
    "version_detail",
    "versions_page",
]
