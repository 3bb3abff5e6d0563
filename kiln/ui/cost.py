"""The cost pages' data: ``kiln cost``'s report over the same period, from the stored storage
measurements (``kiln cost --no-measure``: a page view never lists the artifact store).

``/cost`` shows every pipeline (a page of them, most expensive first) and ``/pipelines/{name}/
cost`` one pipeline per segment and per version (one fetch of the items, two reports), with
its $ per 1,000 predictions and the right-sizing advice of its latest run. The figures are
``kiln.monitoring.cost.report``'s own, so they equal ``kiln cost --json --no-measure``'s.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from kiln.config.prices import resolve_prices
from kiln.errors import ConfigError
from kiln.monitoring.cost.model import CostItem
from kiln.monitoring.cost.report import (
    CostReport,
    KeyRow,
    PipelineCost,
    build_report,
    cost_report,
    period_items,
    period_start,
)
from kiln.monitoring.cost.rightsize import Advice, rightsizing
from kiln.pipeline.plan import segment_label
from kiln.settings import Settings
from kiln.stores import Stores
from kiln.ui._cache import Recent

__all__ = [
    "DEFAULT_SINCE",
    "CostOverview",
    "KeyCost",
    "PipelineCostView",
    "advice_doc",
    "cost_overview",
    "parse_since",
    "pipeline_cost",
]

DEFAULT_SINCE = "30d"
"""As `kiln cost`."""
KEPT_PERIODS = ("7d", "30d", "90d")
"""Periods whose reports the UI keeps (see _cache); any other is computed on demand, one at a
time."""


def parse_since(text: str | None, now: datetime) -> datetime:
    """``?since=``: ``30d`` or a date, as `kiln cost --since`; a ConfigError (400) saying what
    to write otherwise."""
    given = (text or DEFAULT_SINCE).strip()
    try:
        return period_start(given, now)
    except ValueError as e:
        raise ConfigError(
            f"since: {e}",
            hint="give since as a duration back from now (30d, 12h) or a date (2026-11-01)",
        ) from None


@dataclass(frozen=True)
class CostOverview:
    report: CostReport
    """Every pipeline with cost in the period or the previous one, most expensive first."""
    since_text: str
    page: int
    per_page: int
    computed_at: datetime | None = None
    """When the report was computed (kept up to ``ui_cost_cache_seconds``)."""

    @property
    def total(self) -> int:
        return len(self.report.pipelines)

    @property
    def shown(self) -> list[PipelineCost]:
        start = (self.page - 1) * self.per_page
        return self.report.pipelines[start : start + self.per_page]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def cost_overview(
    settings: Settings,
    stores: Stores,
    since: str | None,
    *,
    page: int = 1,
    per_page: int = 50,
    recent: Recent | None = None,
) -> CostOverview:
    """Every pipeline's cost; with ``recent``, the report kept for ``since`` (see _cache)."""
    since_text = (since or DEFAULT_SINCE).strip()
    parse_since(since_text, datetime.now(UTC))  # a bad value is a 400 before anything is kept

    def compute() -> CostReport:
        now = datetime.now(UTC)
        start = parse_since(since_text, now)
        return cost_report(stores.metadata, resolve_prices(settings), since=start, until=now)

    keep = since_text in KEPT_PERIODS
    kept = (recent or Recent(0)).get(("overview", since_text), compute, keep=keep)
    return CostOverview(kept.value, since_text, page, per_page, kept.computed_at)


def warm_cost(ui: Any) -> None:
    """Start computing the default period's overview in the background (app start-up)."""
    ui.recent.warm(
        ("overview", DEFAULT_SINCE),
        lambda: cost_overview(ui.settings, ui.stores, DEFAULT_SINCE).report,
    )


@dataclass(frozen=True)
class KeyCost:
    """One segment or version of a pipeline: the report's row and its predictions."""

    row: KeyRow
    label: str
    predictions: int

    @property
    def usd_per_1000_predictions(self) -> float | None:
        serving = self.row.by_kind["serving"]
        if not self.predictions or not serving.complete:
            return None
        return serving.usd / self.predictions * 1000


@dataclass(frozen=True)
class PipelineCostView:
    pipeline: str
    owner: str
    since_text: str
    report: CostReport
    """The pipeline's report by segment (its one PipelineCost, or none)."""
    cost: PipelineCost | None
    segments: list[KeyCost] = field(default_factory=list)
    versions: list[KeyCost] = field(default_factory=list)
    advice: list[Advice] = field(default_factory=list)
    computed_at: datetime | None = None


def pipeline_cost(
    settings: Settings,
    stores: Stores,
    name: str,
    since: str | None,
    *,
    recent: Recent | None = None,
) -> PipelineCostView:
    """One pipeline's cost by segment and by version (NotFoundError for an unknown one); with
    ``recent``, the view kept for (name, since) (see _cache)."""
    since_text = (since or DEFAULT_SINCE).strip()
    parse_since(since_text, datetime.now(UTC))
    with stores.metadata.read() as uow:
        owner = uow.pipelines.get(name).owner
    key = ("pipeline", name, since_text)
    kept = (recent or Recent(0)).get(
        key,
        lambda: _pipeline_cost(settings, stores, name, owner, since_text),
        keep=since_text in KEPT_PERIODS,
    )
    return replace(kept.value, computed_at=kept.computed_at)


def _pipeline_cost(
    settings: Settings, stores: Stores, name: str, owner: str, since: str
) -> PipelineCostView:
    now = datetime.now(UTC)
    start = parse_since(since, now)
    prices = resolve_prices(settings)
    items = period_items(stores.metadata, prices, since=start, until=now, pipeline=name)
    shown = [i for i in items if start <= i.at < now]

    def report(by: Any) -> CostReport:
        return build_report(items, since=start, until=now, currency=prices.currency, by=by)

    by_segment, by_version = report("segment"), report("version")
    cost = next(iter(by_segment.pipelines), None)
    versions = next(iter(by_version.pipelines), None)
    return PipelineCostView(
        pipeline=name,
        owner=owner,
        since_text=since,
        report=by_segment,
        cost=cost,
        segments=_keys(cost, shown, lambda i: i.segment, segment_label),
        versions=_keys(versions, shown, lambda i: i.version, lambda k: k),
        advice=rightsizing(stores.metadata, name),
    )


def _keys(cost: PipelineCost | None, items: list[CostItem], key: Any, label: Any) -> list[KeyCost]:
    """The report's rows with the predictions served under each key (the report keys a
    version ``v3`` and an item without a key ``(none)``, as ``rows_by`` does)."""
    if cost is None:
        return []
    predictions: dict[str, int] = defaultdict(int)
    for i in items:
        if i.kind == "serving":
            k = key(i)
            name = "(none)" if k is None else (f"v{k}" if isinstance(k, int) else str(k))
            predictions[name] += i.predictions
    return [KeyCost(r, label(r.key), predictions.get(r.key, 0)) for r in cost.rows]


def advice_doc(advice: Advice) -> dict[str, Any]:
    """As `kiln cost --json` writes it under ``rightsizing``."""
    return {k: getattr(advice, k, None) for k in ("resource", "requested", "used", "text")}
