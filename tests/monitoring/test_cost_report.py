"""The cost report adds CostItems up: periods, $/month, trend, top segments, --by rows, $ per
1,000 predictions, and unknown amounts kept as a lower bound (never 0)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kiln.monitoring.cost.model import CostItem
from kiln.monitoring.cost.report import MONTH, Sum, build_report, per_month, trend

SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=10)
DAY = timedelta(days=1)


def item(usd: float | None, **more: Any) -> CostItem:
    fields: dict[str, Any] = {
        "pipeline": "flights", "kind": "training", "detail": "task", "at": SINCE + DAY,
        "usd": usd,
    }  # fmt: skip
    return CostItem(**(fields | more))


def test_kinds_add_up_to_the_total_and_become_per_month() -> None:
    items = [
        item(1.0, segment="EWR", run_id="r1", version=1),
        item(2.0, segment="JFK", run_id="r1", version=1),
        item(0.5, detail="shared", segment="JFK", run_id="r1", version=1),
        item(0.25, kind="serving", detail="requests", segment="JFK", version=1, predictions=5000),
        item(0.05, kind="storage", detail="packages", at=SINCE, month_rate_usd=0.2),
        item(0.07, kind="storage", detail="packages", at=SINCE + DAY, month_rate_usd=0.3),
    ]
    (p,) = build_report(items, since=SINCE, until=UNTIL).pipelines
    assert p.by_kind["training"] == Sum(3.5)
    assert p.by_kind["serving"] == Sum(0.25)
    assert p.by_kind["storage"].usd == pytest.approx(0.12)
    assert p.total.usd == pytest.approx(3.87)
    # training and serving: the period's spend as a monthly rate; storage: what the newest
    # measured bytes cost per month
    assert p.monthly["training"].usd == pytest.approx(3.5 * MONTH / timedelta(days=10))
    assert p.monthly["storage"] == Sum(0.3)
    assert p.monthly["total"].usd == pytest.approx(3.75 * MONTH / timedelta(days=10) + 0.3)
    assert sum(p.monthly[k].usd for k in ("training", "serving", "storage")) == pytest.approx(
        p.monthly["total"].usd
    )
    assert p.usd_per_1000_predictions == pytest.approx(0.25 / 5000 * 1000)
    assert p.top_segments == [("JFK", Sum(2.75)), ("EWR", Sum(1.0))]


def test_items_outside_the_periods_are_left_out_and_the_previous_gives_the_trend() -> None:
    items = [
        item(3.0, at=SINCE + DAY),
        item(2.0, at=SINCE - DAY),  # previous period
        item(100.0, at=UNTIL),  # after: until is exclusive
        item(100.0, at=SINCE - 11 * DAY),  # before the previous period
    ]
    (p,) = build_report(items, since=SINCE, until=UNTIL).pipelines
    assert p.total == Sum(3.0)
    assert p.previous == Sum(2.0)
    assert p.trend == pytest.approx(0.5)


def test_unknown_amounts_stay_unknown_never_zero() -> None:
    items = [item(1.0, segment="EWR"), item(None, segment="EWR"), item(None, kind="serving")]
    (p,) = build_report(items, since=SINCE, until=UNTIL).pipelines
    assert p.total == Sum(1.0, unknown=2)
    assert not p.total.complete
    assert p.total.text() == "≥ $1.00"
    assert p.by_kind["serving"].text() == "≥ $0.00"
    assert p.usd_per_1000_predictions is None
    doc = p.to_dict()
    assert doc["spent"]["total"] == {"usd": 1.0, "complete": False, "unknown_items": 2}


@pytest.mark.parametrize(
    ("by", "keys"),
    [
        ("segment", ["JFK", "EWR", "(none)"]),
        ("version", ["v2", "v1"]),
        ("run", ["r2", "r1", "(none)"]),
    ],
)
def test_rows_by_key_add_up_to_the_pipeline(by: Any, keys: list[str]) -> None:
    items = [
        item(1.0, segment="EWR", run_id="r1", version=1),
        item(2.0, segment="JFK", run_id="r2", version=2),
        item(0.5, kind="serving", detail="requests", segment="JFK", version=2),
        item(0.1, kind="storage", detail="packages", version=1),
        item(0.2, kind="storage", detail="snapshots", version=2),
    ]
    (p,) = build_report(items, since=SINCE, until=UNTIL, by=by).pipelines
    assert [r.key for r in p.rows] == keys
    assert sum(r.total.usd for r in p.rows) == pytest.approx(p.total.usd)
    jfk = next(r for r in p.rows if r.key in ("JFK", "v2", "r2"))
    assert jfk.by_kind["training"] == Sum(2.0)
    if by != "run":
        assert jfk.by_kind["serving"] == Sum(0.5)


def test_pipelines_are_apart_most_expensive_first_and_the_document_is_stable() -> None:
    items = [item(1.0), item(5.0, pipeline="taxi"), item(0.5, pipeline="taxi", at=SINCE - DAY)]
    report = build_report(items, since=SINCE, until=UNTIL, currency="EUR", by=None)
    assert [p.pipeline for p in report.pipelines] == ["taxi", "flights"]
    doc = report.to_dict()
    assert doc["schema"] == 1
    assert doc["currency"] == "EUR"
    assert set(doc["pipelines"][0]) == {
        "pipeline", "spent", "per_month", "previous_period", "trend", "top_segments",
        "predictions", "usd_per_1000_predictions", "rows",
    }  # fmt: skip
    assert Sum(5.0).text("EUR") == "EUR 5.00"


def test_trend_without_a_base_and_bad_periods() -> None:
    assert trend(Sum(1.0), Sum(0.0)) is None
    assert trend(Sum(0.5), Sum(1.0)) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="positive"):
        per_month(Sum(1.0), timedelta(0))
