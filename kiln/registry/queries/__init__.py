"""Typed read queries that the CLI and the UI share: frozen dataclasses in and out, one read
unit of work each, bounded work at any registry size (paged in SQL, batched per page)."""

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
from kiln.registry.queries.versions import VersionRow, VersionsPage, versions_page

__all__ = [
    "MONITOR_STATES",
    "CatalogueFilter",
    "CataloguePage",
    "CatalogueRow",
    "GateOutcome",
    "LastRun",
    "MonitorState",
    "VersionRow",
    "VersionsPage",
    "catalogue",
    "versions_page",
]
