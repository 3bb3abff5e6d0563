"""Storage cost: measured bytes per pipeline and kind (real runs, real captures), prorated over a
period as a step function, unknown before the first measurement, never zero by default."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.config import load_config
from kiln.config.prices import resolve_prices
from kiln.monitoring.cost.model import storage_usd
from kiln.monitoring.cost.storage import measure_storage, storage_items
from kiln.runs.runner import Runner
from kiln.settings import Prices, Settings
from kiln.stores import CaptureRecord, CaptureWriter, MetadataStore, Stores
from tests.conftest import BASE, merge

PRICES = Prices(storage_gb_month=0.023)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _pipeline(store: MetadataStore, name: str, created: datetime) -> None:
    with store.unit_of_work() as uow:
        uow.pipelines.upsert(name, "tests", "", "kiln.yaml")
    engine = store.engine
    import sqlalchemy as sa

    from kiln.stores.metadata import tables as t

    with engine.begin() as conn:  # a pipeline created at a known time
        conn.execute(
            sa.update(t.Pipeline).where(t.Pipeline.name == name).values(created_at=created)
        )


def _measure(store: MetadataStore, name: str, kind: str, at: datetime, nbytes: int) -> None:
    with store.unit_of_work() as uow:
        uow.storage_usage.record(name, kind, at, nbytes, 1)


def test_items_prorate_each_measurement_until_the_next(store: MetadataStore) -> None:
    _pipeline(store, "p", T0 - timedelta(days=30))
    _measure(store, "p", "captures", T0, 10**9)
    _measure(store, "p", "captures", T0 + timedelta(days=10), 3 * 10**9)
    _measure(store, "p", "packages", T0 + timedelta(days=5), 2 * 10**9)
    since, until = T0 + timedelta(days=2), T0 + timedelta(days=20)
    items = storage_items(store, PRICES, since=since, until=until)
    got = {(i.detail, i.at): i.usd for i in items}
    day = 86400.0
    assert got == pytest.approx(
        {
            ("captures", since): storage_usd(PRICES, 10**9, 8 * day),
            ("captures", T0 + timedelta(days=10)): storage_usd(PRICES, 3 * 10**9, 10 * day),
            # nothing is known of the packages from the period's start to their first measurement
            ("packages", since): None,
            ("packages", T0 + timedelta(days=5)): storage_usd(PRICES, 2 * 10**9, 15 * day),
        }
    )
    assert all(i.kind == "storage" and i.pipeline == "p" and since <= i.at < until for i in items)
    unknown = next(i for i in items if i.usd is None)
    assert unknown.storage_usd is None  # unknown, never 0
    # a month of 1 GB at $0.023/GB-month is $0.023
    month = storage_items(store, PRICES, since=T0, until=T0 + timedelta(days=30.436875))
    first = next(i for i in month if i.detail == "captures" and i.at == T0)
    assert first.usd == pytest.approx(0.023 * 10 / 30.436875)


def test_nothing_is_charged_before_the_pipeline_existed(store: MetadataStore) -> None:
    _pipeline(store, "young", T0)
    _measure(store, "young", "labels", T0 + timedelta(hours=1), 5 * 10**9)
    items = storage_items(
        store, PRICES, since=T0 - timedelta(days=5), until=T0 + timedelta(hours=2)
    )
    assert [(i.at, i.usd is None) for i in items] == [
        (T0, True),  # created, not yet measured: unknown
        (T0 + timedelta(hours=1), False),
    ]
    assert items[1].usd == pytest.approx(storage_usd(PRICES, 5 * 10**9, 3600))


def test_pipeline_filter_and_no_future(store: MetadataStore) -> None:
    now = datetime.now(UTC)
    for name in ("a", "b"):
        _pipeline(store, name, now - timedelta(days=3))
        _measure(store, name, "snapshots", now - timedelta(days=2), 10**9)
    items = storage_items(
        store, PRICES, since=now - timedelta(days=1), until=now + timedelta(days=29), pipeline="a"
    )
    assert {i.pipeline for i in items} == {"a"}
    [item] = items
    # the last measurement holds until now, not until the end of the period (no forecast)
    assert item.usd == pytest.approx(storage_usd(PRICES, 10**9, 86400), rel=1e-3)


def test_measurements_are_checked(store: MetadataStore) -> None:
    with store.unit_of_work() as uow, pytest.raises(ValueError, match="kind"):
        uow.storage_usage.record("p", "models", T0, 1, 1)
    with store.unit_of_work() as uow, pytest.raises(ValueError, match="timezone"):
        uow.storage_usage.record("p", "packages", T0.replace(tzinfo=None), 1, 1)


def _sizes(root: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in root.glob(pattern) if p.is_file())


def test_measure_storage_on_real_runs_counts_what_is_on_disk(
    make_config: Callable[..., Any],
    runner: Runner,
    stores: Stores,
    settings: Settings,
    tmp_path: Path,
    warehouse: Path,
) -> None:
    first = runner.run(make_config())
    # a second pipeline on the same data: the same snapshot object, counted for each
    data = merge(BASE, {"name": "flights-other", "data": {"source": str(warehouse)}})
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    other = runner.run(load_config(tmp_path / "other.yaml"))
    root = Path(settings.artifact_root)
    now = datetime.now(UTC)
    with CaptureWriter(str(root), writer_id="cost") as writer:
        for i in range(50):
            writer.offer(
                CaptureRecord(
                    request_id=f"r{i}",
                    ts=now,
                    pipeline="flights-test",
                    version=1,
                    stage="production",
                    segment="JFK",
                    model="JFK",
                    fallback=False,
                    features={"origin": "JFK"},
                    prediction=1.0,
                    error=None,
                    latency_ms=1.0,
                )
            )
    measured = measure_storage(stores, settings)
    mine, theirs = measured["flights-test"], measured["flights-other"]
    with stores.metadata.read() as uow:
        a = uow.runs.get(first.run_id)
        b = uow.runs.get(other.run_id)
        rows = uow.storage_usage.list("flights-test")
    assert a.data_digest == b.data_digest  # shared
    snapshot = (root / "objects" / a.data_digest[:2] / a.data_digest).stat().st_size  # type: ignore[index]
    assert mine["snapshots"] == theirs["snapshots"] == snapshot
    package = {first.manifest_digest, *(m["sha256"] for m in first.manifest["models"].values())}
    package.add(first.manifest["fallback"]["sha256"])
    assert mine["packages"] == sum(
        (root / "objects" / d[:2] / d).stat().st_size  # type: ignore[index]
        for d in package
    )
    assert mine["captures"] == _sizes(root, "captures/pipeline=flights-test/*/*.parquet") > 0
    assert theirs["captures"] == 0 and mine["labels"] == 0
    assert {r.kind: r.bytes for r in rows} == mine
    # $/month of what the flights run keeps, at the default price table
    prices = resolve_prices(settings)
    month = sum(storage_usd(prices, b, 30.436875 * 86400) for b in mine.values())
    assert month > 0
    # the first measurement rebuilt its history from the objects' write times: storage since
    # the pipeline was created is known (nothing before its first object), none of it unknown
    later = datetime.now(UTC)
    items = [
        i
        for i in storage_items(stores.metadata, prices, since=now - timedelta(hours=2), until=later)
        if i.pipeline == "flights-test"
    ]
    assert items and all(i.usd is not None for i in items)
    path = root / "objects" / a.data_digest[:2] / a.data_digest  # type: ignore[index]
    written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    kept = storage_usd(prices, snapshot, (later - written).total_seconds())
    assert sum(i.usd or 0.0 for i in items if i.detail == "snapshots") == pytest.approx(kept)


def test_storage_kept_since_the_previous_period_is_spent_in_each_period_it_covers(
    store: MetadataStore,
) -> None:
    """Measured 45 days ago and now: `kiln cost --since 30d` spends 30 days of it in the period
    and 15 in the previous one (not all 45 in the previous one), and the budget's month to
    date and 7-day rate count it from their own starts."""
    from kiln.monitoring.cost.budget import RATE_DAYS, budget_items, forecast_month, month_bounds
    from kiln.monitoring.cost.report import MONTH, cost_report

    now = datetime.now(UTC)
    _pipeline(store, "p", now - timedelta(days=60))
    _measure(store, "p", "packages", now - timedelta(days=45), 10**9)
    _measure(store, "p", "packages", now - timedelta(seconds=1), 10**9)
    since = now - timedelta(days=30)
    [p] = cost_report(store, PRICES, since=since, until=now).pipelines
    per_day = 0.023 / (MONTH / timedelta(days=1))  # 1 GB at $0.023/GB-month
    assert p.by_kind["storage"].usd == pytest.approx(30 * per_day, rel=1e-4)
    assert p.previous.usd == pytest.approx(15 * per_day, rel=1e-4)
    assert p.trend == pytest.approx(1.0, rel=1e-3)  # +100%: 30 days against 15
    month, week = budget_items(store, PRICES, now, pipeline="p")
    forecast = forecast_month(month, now, week)
    start, _ = month_bounds(now)
    assert forecast.spent.usd == pytest.approx(
        (now - start) / timedelta(days=1) * per_day, rel=1e-3
    )
    assert forecast.daily.usd == pytest.approx(per_day, rel=1e-3)
    assert RATE_DAYS == 7
