"""Budgets: the month's forecast (month to date + the last 7 days' daily mean x days left), and
its alert episode through the real alert machinery and outbox to a real webhook receiver:
one notification per episode however many passes, one more on escalation, one on recovery."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kiln.config.monitor import WebhookChannel
from kiln.monitoring.cost.budget import (
    budget_finding,
    forecast_month,
    month_bounds,
    update_budget,
)
from kiln.monitoring.cost.model import CostItem
from kiln.monitoring.cost.report import Sum
from kiln.monitoring.notify import channel_key, deliver_due
from kiln.stores import MetadataStore
from tests.monitoring.test_notify import Receiver, hook

P = "flights"
DAY = timedelta(days=1)
NOW = datetime(2026, 11, 21, tzinfo=UTC)


def item(usd: float | None, at: datetime) -> CostItem:
    return CostItem(P, "training", "task", at, usd)


def month_of_spend() -> list[CostItem]:
    """$1 on the 2nd, then $0.50 a day on each of the 7 days before NOW."""
    items = [item(1.0, datetime(2026, 11, 2, tzinfo=UTC))]
    items += [item(0.5, NOW - (k + 0.5) * DAY) for k in range(7)]
    return items


def test_month_bounds_cross_the_year() -> None:
    assert month_bounds(datetime(2026, 12, 31, 23, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_forecast_is_month_to_date_plus_the_weeks_daily_mean_times_days_left() -> None:
    f = forecast_month(month_of_spend(), NOW)
    assert f.spent == Sum(4.5)
    assert f.daily.usd == pytest.approx(0.5)
    assert f.days_left == pytest.approx(10.0)
    assert f.forecast.usd == pytest.approx(9.5)
    assert f.month == "2026-11"


def test_early_in_a_month_the_rate_uses_last_months_days_but_spent_does_not() -> None:
    now = datetime(2026, 11, 2, tzinfo=UTC)
    f = forecast_month([item(7.0, now - 3 * DAY), item(None, now - DAY / 2)], now)
    assert f.spent == Sum(0.0, unknown=1)
    assert f.daily == Sum(1.0, unknown=1)
    assert f.forecast.usd == pytest.approx(29.0)
    assert not f.forecast.complete


@pytest.mark.parametrize(("budget", "level"), [(20.0, "ok"), (8.0, "warn"), (4.0, "alert")])
def test_levels(budget: float, level: str) -> None:
    finding = budget_finding(forecast_month(month_of_spend(), NOW), budget)
    assert (finding.check, finding.kind, finding.level) == ("budget", "budget", level)
    assert finding.value == pytest.approx(9.5)
    assert finding.threshold == budget
    assert "$9.50" in finding.message


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def one_pass(
    store: MetadataStore, channel: WebhookChannel, items: list[CostItem], budget: float,
    now: datetime,
) -> list[Any]:  # fmt: skip
    """What the monitor pass does for a budget: check, then deliver the outbox."""
    finding = budget_finding(forecast_month(items, now), budget)
    with store.unit_of_work() as uow:
        changes = update_budget(uow, P, finding, [channel_key(channel)], now)
    deliver_due(store.unit_of_work, P, [channel], clock=lambda: now)
    return changes


def test_an_episode_notifies_once_escalates_once_and_resolves_once(
    store: MetadataStore, receiver: Receiver
) -> None:
    channel = hook(receiver.url())
    items = month_of_spend()
    first = one_pass(store, channel, items, 8.0, NOW)
    assert [c.kind for c in first] == ["opened"]
    assert first[0].alert.level == "warn"
    second = one_pass(store, channel, items, 8.0, NOW + timedelta(hours=1))
    assert [c.kind for c in second] == ["still_open"]
    sent = [r["json"]["kiln"] for r in receiver.requests]
    assert [(s["event"], s["kind"], s["check"], s["level"]) for s in sent] == [
        ("opened", "budget", "budget", "warn")
    ]
    assert sent[0]["threshold"] == 8.0
    text = receiver.requests[0]["json"]["text"]
    assert text.startswith(f"[kiln] alert #{first[0].alert.id} {P}: budget WARN opened: forecast")
    assert "passes the budget $8.00" in text

    # spent passes the budget: announced once more (escalated), then quiet again
    more = [*items, item(5.0, NOW + timedelta(hours=1))]
    for hours in (2, 3):
        one_pass(store, channel, more, 8.0, NOW + timedelta(hours=hours))
    assert [r["json"]["kiln"]["event"] for r in receiver.requests] == ["opened", "escalated"]

    # the budget is raised: resolved, notified once
    for hours in (4, 5):
        one_pass(store, channel, more, 1000.0, NOW + timedelta(hours=hours))
    events = [r["json"]["kiln"]["event"] for r in receiver.requests]
    assert events == ["opened", "escalated", "resolved"]
    assert "already spent more than it" in receiver.requests[1]["json"]["text"]
    assert (
        "budget resolved: the month's forecast is back within the budget (last over:"
        in (receiver.requests[2]["json"]["text"])
    )
    with store.read() as uow:
        (alert,) = uow.alerts.list(P)
    assert (alert.kind, alert.status) == ("budget", "resolved")


def test_a_new_month_resolves_and_a_later_overrun_is_a_new_episode(
    store: MetadataStore, receiver: Receiver
) -> None:
    channel = hook(receiver.url())
    items = month_of_spend()
    one_pass(store, channel, items, 5.0, NOW)
    december = datetime(2026, 12, 1, 1, tzinfo=UTC)  # the rate still counts late November
    changes = one_pass(store, channel, items[:1], 5.0, december)
    assert [c.kind for c in changes] == ["resolved"]
    over = [item(6.0, december + timedelta(hours=1))]
    changes = one_pass(store, channel, over, 5.0, december + timedelta(hours=2))
    assert [c.kind for c in changes] == ["opened"]
    events = [r["json"]["kiln"]["event"] for r in receiver.requests]
    assert events == ["opened", "resolved", "opened"]


def test_a_forecast_hovering_at_the_budget_opens_one_episode_resolved_below_90_percent(
    store: MetadataStore, receiver: Receiver
) -> None:
    channel = hook(receiver.url())
    spent = [item(1.0, datetime(2026, 11, 2, tzinfo=UTC))]  # $1 spent, no recent rate

    def at(forecast: float) -> list[CostItem]:  # spent + w + w / 7 x 10 days left
        return [*spent, item((forecast - 1.0) * 7 / 17, NOW - DAY)]

    kinds = []
    for hour, forecast in enumerate([8.2, 7.9, 8.1, 7.5, 8.3, 7.3, 7.1]):
        changes = one_pass(store, channel, at(forecast), 8.0, NOW + timedelta(seconds=hour))
        kinds.append([c.kind for c in changes if c.kind != "still_open"])
    # opened over $8, kept open while the forecast stays at or above $7.20, resolved under it
    assert kinds == [["opened"], [], [], [], [], [], ["resolved"]]
    events = [r["json"]["kiln"]["event"] for r in receiver.requests]
    assert events == ["opened", "resolved"]
    with store.read() as uow:
        (alert,) = uow.alerts.list(P)
    assert alert.status == "resolved"


def test_a_budget_raised_above_the_forecast_resolves_at_once(
    store: MetadataStore, receiver: Receiver
) -> None:
    channel = hook(receiver.url())
    items = month_of_spend()  # forecast $9.50
    assert [c.kind for c in one_pass(store, channel, items, 9.0, NOW)] == ["opened"]
    changes = one_pass(store, channel, items, 10.0, NOW + timedelta(hours=1))
    assert [c.kind for c in changes] == ["resolved"]  # 9.5 is 95% of it, but it was raised
