"""What `kiln cost` and `kiln status` show: CostItems added up per pipeline, kind and key.

Items come from the three sources (training, serving, storage: one call each for this period
and one for the previous one of the same length, so that each source cuts what spans both,
e.g. a storage measurement kept since before the period, at the period's start) and are only
added up here, so the figures add up by construction. :func:`build_report` is pure (items in,
report out); :func:`cost_report` fetches the items.

Unknown amounts (decided here): a sum with unknown parts is a :class:`Sum` whose ``usd`` is the
known part and ``unknown`` the number of items it could not price; it is shown as ``≥ $x`` (a
lower bound, never a silent zero) and as ``"complete": false`` in JSON. A trend is computed
from the known parts and flagged the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from kiln.monitoring.cost.model import CostItem, amount_text

if TYPE_CHECKING:
    from kiln.settings import Prices
    from kiln.stores import MetadataStore

__all__ = [
    "KINDS",
    "MONTH",
    "By",
    "CostReport",
    "KeyRow",
    "PipelineCost",
    "Sum",
    "build_report",
    "cost_items",
    "cost_report",
    "monthly_costs",
    "per_month",
    "period_items",
    "period_start",
    "storage_rate",
    "trend",
]

By = Literal["segment", "version", "run"]
KINDS = ("training", "serving", "storage")
MONTH = timedelta(days=30.436875)
"""A mean Gregorian month, as storage is prorated (kiln.monitoring.cost.model)."""
TOP = 5


@dataclass(frozen=True, slots=True)
class Sum:
    """Known dollars and how many items could not be priced (``unknown`` > 0: a lower bound)."""

    usd: float = 0.0
    unknown: int = 0

    @property
    def complete(self) -> bool:
        return self.unknown == 0

    def __add__(self, other: Sum) -> Sum:
        return Sum(self.usd + other.usd, self.unknown + other.unknown)

    def scaled(self, factor: float) -> Sum:
        return Sum(self.usd * factor, self.unknown)

    def text(self, currency: str = "USD") -> str:
        sign = "$" if currency == "USD" else f"{currency} "
        figure = f"{sign}{amount_text(self.usd)}"
        return figure if self.complete else f"≥ {figure}"

    def to_dict(self) -> dict[str, Any]:
        return {"usd": self.usd, "complete": self.complete, "unknown_items": self.unknown}


def add_up(items: Iterable[CostItem]) -> Sum:
    usd, unknown = 0.0, 0
    for item in items:
        if item.usd is None:
            unknown += 1
        else:
            usd += item.usd
    return Sum(usd, unknown)


def per_month(spent: Sum, period: timedelta) -> Sum:
    """``spent`` in ``period`` as a monthly rate: spent * month / period."""
    if period <= timedelta(0):
        raise ValueError(f"a cost period must be positive, got {period}")
    return spent.scaled(MONTH / period)


def storage_rate(items: Iterable[CostItem]) -> Sum:
    """$/month of storage: what the newest measured bytes of each kind cost per month (what a
    cloud bill charges for them), not the period's average, which a young pipeline dilutes."""
    newest: dict[tuple[str, str], CostItem] = {}
    for item in items:
        if item.kind != "storage":
            continue
        key = (item.pipeline, item.detail)
        if key not in newest or item.at >= newest[key].at:
            newest[key] = item
    return Sum(
        sum(i.month_rate_usd or 0.0 for i in newest.values()),
        sum(1 for i in newest.values() if i.month_rate_usd is None),
    )


def trend(current: Sum, previous: Sum) -> float | None:
    """Change against the previous period, as a fraction (0.2: +20%); None when the previous
    period cost nothing known (no base to compare with)."""
    if previous.usd <= 0:
        return None
    return (current.usd - previous.usd) / previous.usd


@dataclass(frozen=True)
class KeyRow:
    """One segment, version or run of a pipeline (``--by``), split by kind."""

    key: str
    by_kind: dict[str, Sum]
    total: Sum

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            **{k: s.to_dict() for k, s in self.by_kind.items()},
            "total": self.total.to_dict(),
        }


@dataclass(frozen=True)
class PipelineCost:
    pipeline: str
    by_kind: dict[str, Sum]
    """Spent in the period per kind (training, serving, storage)."""
    total: Sum
    monthly: dict[str, Sum]
    """Per kind and ``total``, as $/month."""
    previous: Sum
    """Spent in the previous period of the same length."""
    trend: float | None
    top_segments: list[tuple[str, Sum]]
    predictions: int
    usd_per_1000_predictions: float | None
    """Serving $ per 1,000 rows predicted; None when nothing was predicted or serving is not
    fully known."""
    rows: list[KeyRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "spent": {k: s.to_dict() for k, s in self.by_kind.items()}
            | {"total": self.total.to_dict()},
            "per_month": {k: s.to_dict() for k, s in self.monthly.items()},
            "previous_period": self.previous.to_dict(),
            "trend": None if self.trend is None else round(self.trend, 6),
            "top_segments": [{"segment": s, **v.to_dict()} for s, v in self.top_segments],
            "predictions": self.predictions,
            "usd_per_1000_predictions": self.usd_per_1000_predictions,
            "rows": [r.to_dict() for r in self.rows],
        }


@dataclass(frozen=True)
class CostReport:
    since: datetime
    until: datetime
    currency: str
    by: By | None
    pipelines: list[PipelineCost]

    def to_dict(self) -> dict[str, Any]:
        """The stable document of `kiln cost --json` (``schema`` 1)."""
        return {
            "schema": 1,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "currency": self.currency,
            "by": self.by,
            "pipelines": [p.to_dict() for p in self.pipelines],
        }


def build_report(
    items: Sequence[CostItem],
    *,
    since: datetime,
    until: datetime,
    currency: str = "USD",
    by: By | None = None,
) -> CostReport:
    """Add up ``items``: those with ``since <= at < until`` are the period, those in the same
    length before it the previous period; every other item is left out."""
    length = until - since
    before = since - length
    current: dict[str, list[CostItem]] = defaultdict(list)
    previous: dict[str, list[CostItem]] = defaultdict(list)
    for item in items:
        if since <= item.at < until:
            current[item.pipeline].append(item)
        elif before <= item.at < since:
            previous[item.pipeline].append(item)
    names = sorted(set(current) | set(previous))
    pipelines = [_pipeline(n, current[n], previous[n], length, by) for n in names]
    pipelines.sort(key=lambda p: (-p.total.usd, p.pipeline))
    return CostReport(since, until, currency, by, pipelines)


def _pipeline(
    name: str,
    items: list[CostItem],
    previous: list[CostItem],
    length: timedelta,
    by: By | None,
) -> PipelineCost:
    by_kind = {k: add_up(i for i in items if i.kind == k) for k in KINDS}
    total = add_up(items)
    monthly = {k: per_month(s, length) for k, s in by_kind.items()}
    monthly["storage"] = storage_rate(items)
    monthly["total"] = monthly["training"] + monthly["serving"] + monthly["storage"]
    before = add_up(previous)
    predictions = sum(i.predictions for i in items if i.kind == "serving")
    serving = by_kind["serving"]
    per_thousand = serving.usd / predictions * 1000 if predictions and serving.complete else None
    return PipelineCost(
        name, by_kind, total, monthly, before, trend(total, before),
        top_segments(items), predictions, per_thousand,
        [] if by is None else rows_by(items, by),
    )  # fmt: skip


def top_segments(items: Iterable[CostItem], n: int = TOP) -> list[tuple[str, Sum]]:
    """The ``n`` most expensive segments (all kinds), most expensive first."""
    found = _grouped(items, lambda i: i.segment)
    ranked = sorted(
        ((seg, add_up(its)) for seg, its in found.items()), key=lambda s: (-s[1].usd, s[0])
    )
    return ranked[:n]


def rows_by(items: Iterable[CostItem], by: By) -> list[KeyRow]:
    """One row per segment, version or run, split by kind, most expensive first. Items that
    have no such key (storage has no segment, a pipeline's storage no run) are one ``(none)``
    row, so the rows still add up to the pipeline."""

    def key(i: CostItem) -> str:
        value = {"segment": i.segment, "version": i.version, "run": i.run_id}[by]
        if value is None:
            return "(none)"
        return f"v{value}" if by == "version" else str(value)

    rows = []
    for k, its in _grouped(items, key).items():
        rows.append(KeyRow(k, {kind: add_up(i for i in its if i.kind == kind) for kind in KINDS},
                           add_up(its)))  # fmt: skip
    rows.sort(key=lambda r: (r.key == "(none)", -r.total.usd, r.key))
    return rows


def _grouped(items: Iterable[CostItem], key: Any) -> dict[str, list[CostItem]]:
    found: dict[str, list[CostItem]] = defaultdict(list)
    for i in items:
        k = key(i)
        if k is not None:
            found[k].append(i)
    return found


# -- the sources ------------------------------------------------------------------------------


def cost_items(
    metadata: MetadataStore,
    prices: Prices,
    *,
    since: datetime,
    until: datetime,
    pipeline: str | None = None,
) -> list[CostItem]:
    """Every item of training, serving and storage with ``since <= at < until``."""
    from kiln.monitoring.cost.serving import serving_items
    from kiln.monitoring.cost.storage import storage_items
    from kiln.monitoring.cost.training import training_items

    found: list[CostItem] = []
    for source in (training_items, serving_items, storage_items):
        found += source(metadata, prices, since=since, until=until, pipeline=pipeline)
    return [i for i in found if since <= i.at < until]


def cost_report(
    metadata: MetadataStore,
    prices: Prices,
    *,
    since: datetime,
    until: datetime,
    pipeline: str | None = None,
    by: By | None = None,
) -> CostReport:
    """Per pipeline: training, serving, storage and total in ``[since, until)`` and as
    $/month, the previous period and the trend, the top segments, $ per 1,000 predictions,
    and with ``by`` one row per segment, version or run."""
    items = period_items(metadata, prices, since=since, until=until, pipeline=pipeline)
    return build_report(items, since=since, until=until, currency=prices.currency, by=by)


def period_items(
    metadata: MetadataStore,
    prices: Prices,
    *,
    since: datetime,
    until: datetime,
    pipeline: str | None = None,
) -> list[CostItem]:
    """The items :func:`cost_report` adds up: those of ``[since, until)`` and of the previous
    period of the same length (each fetched on its own, so that each source cuts what spans
    both). One fetch gives several reports (``build_report`` with another ``by``)."""
    if until <= since:
        raise ValueError(f"the cost period must end after it starts ({since} .. {until})")
    before = since - (until - since)
    items = cost_items(metadata, prices, since=before, until=since, pipeline=pipeline)
    items += cost_items(metadata, prices, since=since, until=until, pipeline=pipeline)
    return items


def period_start(text: str, now: datetime) -> datetime:
    """The start of a cost period written as ``30d`` (a duration back from ``now``) or a date
    (UTC), e.g. ``2026-11-01`` (`kiln cost --since`, the UI's ``?since=``). ValueError saying
    what is wrong and what to write: not a duration nor a date, not in the past, or so early
    that the previous period of the same length would start before the year 1."""
    from kiln.config.base import parse_duration

    too_early = ValueError(
        f"{text!r} starts too long ago (the period and the previous one of the same length"
        " must start after the year 1); use a later start, e.g. 365d or 2026-01-01"
    )
    try:
        length = parse_duration(text)
    except OverflowError:
        raise too_early from None
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is neither a duration nor a date; use e.g. 30d, 12h or 2026-11-01"
            ) from None
        moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    else:
        if length <= timedelta(0):
            raise ValueError("the period must be longer than 0") from None
        try:
            moment = now - length
        except OverflowError:
            raise too_early from None
    if moment >= now:
        raise ValueError(f"{text!r} is not in the past")
    try:  # the report compares with the previous period of the same length
        moment - (now - moment)
    except OverflowError:
        raise too_early from None
    return moment


def monthly_costs(
    metadata: MetadataStore,
    prices: Prices,
    *,
    now: datetime,
    days: int = 30,
    pipelines: Collection[str] | None = None,
) -> dict[str, Sum]:
    """$/month per pipeline over the last ``days`` (what `kiln status` shows): one call per
    source, storage from its stored measurements (no store listing). ``pipelines``: only
    these (a page of the catalogue): only their runs, steps, tasks and gates are read."""
    period = timedelta(days=days)
    spent: dict[str, Sum] = defaultdict(Sum)
    stored: dict[str, list[CostItem]] = defaultdict(list)
    if pipelines is None:
        items = cost_items(metadata, prices, since=now - period, until=now)
    else:
        items = _items_of(metadata, prices, since=now - period, until=now, names=set(pipelines))
    for item in items:
        if item.kind == "storage":
            stored[item.pipeline].append(item)
        else:
            spent[item.pipeline] += add_up([item])
    names = set(spent) | set(stored)
    return {p: per_month(spent[p], period) + storage_rate(stored[p]) for p in names}


def _items_of(
    metadata: MetadataStore, prices: Prices, *, since: datetime, until: datetime, names: set[str]
) -> list[CostItem]:
    """:func:`cost_items` of the pipelines ``names`` only (training reads only theirs)."""
    from kiln.monitoring.cost.serving import serving_items
    from kiln.monitoring.cost.storage import storage_items
    from kiln.monitoring.cost.training import training_items

    if not names:
        return []
    found = training_items(metadata, prices, since=since, until=until, pipelines=names)
    for source in (serving_items, storage_items):
        found += [
            i for i in source(metadata, prices, since=since, until=until) if i.pipeline in names
        ]
    return [i for i in found if since <= i.at < until]
