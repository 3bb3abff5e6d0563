"""Budgets: the month's forecast of a pipeline against ``cost.budget_per_month``, as an alert.

Forecast (decided here): the calendar month (UTC) of ``now``; month-to-date spent (items with
``month start <= at < now``) + the mean daily spend of the last 7 days (``now - 7d <= at <
now``, whatever month they fall in: it is a rate) * the days left in the month (fractional).
The sources are asked once per window (:func:`budget_items`), so each cuts what spans the
window's start (storage kept since last month counts from the month's start).
Unknown items make it a lower bound (:class:`~kiln.monitoring.cost.report.Sum`): a lower bound
over the budget is over the budget.

Levels: the forecast passes the budget -> ``warn``; what is already spent passes it ->
``alert``. Each pass is one "window" of the monitoring alert machinery
(:func:`kiln.monitoring.alerts.update_alerts`, check ``budget``, kind ``budget``, opening at
once): an episode opens and notifies the pipeline's ``monitor.channels`` once, is announced
once more if it escalates from warn to alert, and resolves (notified once) when the forecast
falls below :data:`RESOLVE_BELOW` (90%) of the budget, in a new month, or when the budget is
raised above the forecast: a forecast hovering at the budget does not open and resolve an
episode at every crossing (hysteresis).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from kiln.monitoring.alerts import AlertChange, update_alerts
from kiln.monitoring.cost.model import CostItem
from kiln.monitoring.cost.report import Sum, add_up, cost_items
from kiln.monitoring.findings import Finding, Level

if TYPE_CHECKING:
    from kiln.config.models import PipelineConfig
    from kiln.settings import Prices
    from kiln.stores import MetadataStore
    from kiln.stores.metadata import UnitOfWork
    from kiln.stores.metadata.alerts import AlertRecord

__all__ = [
    "CHECK",
    "RATE_DAYS",
    "RESOLVE_BELOW",
    "BudgetCheck",
    "Forecast",
    "budget_finding",
    "budget_items",
    "check_budgets",
    "forecast_month",
    "month_bounds",
    "update_budget",
]

CHECK = "budget"
RATE_DAYS = 7
RESOLVE_BELOW = 0.9
"""An open budget episode resolves once the forecast is below this share of the budget."""
_DAY = timedelta(days=1)


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The start of ``now``'s calendar month (UTC) and the start of the next one."""
    now = now.astimezone(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@dataclass(frozen=True)
class Forecast:
    month_start: datetime
    month_end: datetime
    spent: Sum
    """Month to date."""
    daily: Sum
    """Mean daily spend of the last :data:`RATE_DAYS` days."""
    days_left: float
    forecast: Sum

    @property
    def month(self) -> str:
        return f"{self.month_start:%Y-%m}"


def forecast_month(
    items: Sequence[CostItem], now: datetime, week: Sequence[CostItem] | None = None
) -> Forecast:
    """The month's forecast from the items of one pipeline (see the module docstring): the
    month to date from ``items``, the daily rate from ``week`` (the items fetched for the last
    :data:`RATE_DAYS` days; ``items`` when not given)."""
    start, end = month_bounds(now)
    spent = add_up(i for i in items if start <= i.at < now)
    recent = items if week is None else week
    week_sum = add_up(i for i in recent if now - RATE_DAYS * _DAY <= i.at < now)
    daily = week_sum.scaled(1 / RATE_DAYS)
    days_left = max((end - now) / _DAY, 0.0)
    return Forecast(start, end, spent, daily, days_left, spent + daily.scaled(days_left))


def budget_items(
    metadata: MetadataStore, prices: Prices, now: datetime, *, pipeline: str | None = None
) -> tuple[list[CostItem], list[CostItem]]:
    """The items of the month to date and those of the last :data:`RATE_DAYS` days, each asked
    of the sources for its own window (so that each source cuts its spans at its start)."""
    start, _ = month_bounds(now)
    month = cost_items(metadata, prices, since=start, until=now, pipeline=pipeline)
    week = cost_items(metadata, prices, since=now - RATE_DAYS * _DAY, until=now, pipeline=pipeline)
    return month, week


def budget_finding(forecast: Forecast, budget: float, currency: str = "USD") -> Finding:
    """``alert`` when already spent passes ``budget``, ``warn`` when the forecast does, else
    ``ok``; value = the forecast, threshold = the budget."""
    level: Level = "ok"
    if forecast.spent.usd > budget:
        level = "alert"
    elif forecast.forecast.usd > budget:
        level = "warn"
    f, b = forecast.forecast.text(currency), Sum(budget).text(currency)
    how = (
        f"{forecast.spent.text(currency)} spent + {forecast.daily.text(currency)}/day (mean of"
        f" the last {RATE_DAYS} days) x {forecast.days_left:.1f} days left"
    )
    verb = {"ok": "within", "warn": "passes", "alert": "passes"}[level]
    spent_over = " (already spent more than it)" if level == "alert" else ""
    message = f"forecast {f} for {forecast.month} ({how}) {verb} the budget {b}{spent_over}"
    return Finding(
        CHECK, "budget", level, forecast.forecast.usd, budget, message,
        details={
            "month": forecast.month, "spent_usd": forecast.spent.usd,
            "daily_usd": forecast.daily.usd, "days_left": forecast.days_left,
            "complete": forecast.forecast.complete, "currency": currency,
        },
    )  # fmt: skip


def update_budget(
    uow: UnitOfWork, pipeline: str, finding: Finding, channels: list[str], now: datetime
) -> list[AlertChange]:
    """Open, extend, escalate or resolve the pipeline's budget episode for this pass (a pass is
    a window that starts and ends at ``now``; an episode opens on its first pass over). A live
    episode of the same month stays open while the forecast is back within the budget but not
    below :data:`RESOLVE_BELOW` of it, unless the budget was raised."""
    if finding.level == "ok":
        finding = _held(uow.alerts.live(pipeline, CHECK), finding)
    return update_alerts(uow, pipeline, now, now, [finding], 1, channels, now)


def _held(live: AlertRecord | None, finding: Finding) -> Finding:
    """``finding`` (ok), or a warn that keeps ``live`` open (see :func:`update_budget`)."""
    forecast, budget = finding.value, finding.threshold
    if live is None or forecast is None or budget is None:
        return finding
    same_month = live.details.get("month") == finding.details.get("month")
    raised = live.threshold is not None and budget > live.threshold
    if not same_month or raised or forecast < RESOLVE_BELOW * budget:
        return finding
    floor = Sum(RESOLVE_BELOW * budget).text(str(finding.details.get("currency", "USD")))
    message = (
        f"{finding.message}; the episode stays open until the forecast is below {floor}"
        f" ({RESOLVE_BELOW:.0%} of the budget)"
    )
    return replace(finding, level="warn", message=message)


@dataclass(frozen=True)
class BudgetCheck:
    pipeline: str
    budget: float
    forecast: Forecast
    finding: Finding
    changes: list[AlertChange]


def check_budgets(
    metadata: MetadataStore,
    prices: Prices,
    configs: Mapping[str, PipelineConfig],
    *,
    now: datetime | None = None,
) -> list[BudgetCheck]:
    """The budget check of the monitor pass, for each pipeline of ``configs`` that has a
    ``cost.budget_per_month``: its forecast, and the alert changes (queued on the pipeline's
    ``monitor.channels``, delivered by the pass's outbox delivery)."""
    from kiln.monitoring.notify import channel_key

    now = now or datetime.now(UTC)
    budgeted = {n: c for n, c in configs.items() if c.cost.budget_per_month is not None}
    if not budgeted:
        return []
    one = next(iter(budgeted)) if len(budgeted) == 1 else None
    month, week = budget_items(metadata, prices, now, pipeline=one)
    done = []
    for name, cfg in sorted(budgeted.items()):
        budget = float(cfg.cost.budget_per_month or 0.0)
        forecast = forecast_month(
            [i for i in month if i.pipeline == name],
            now,
            [i for i in week if i.pipeline == name],
        )
        finding = budget_finding(forecast, budget, prices.currency)
        channels = [channel_key(c) for c in cfg.monitor.channels]
        with metadata.unit_of_work() as uow:
            changes = update_budget(uow, name, finding, channels, now)
        done.append(BudgetCheck(name, budget, forecast, finding, changes))
    return done
