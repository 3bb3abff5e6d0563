"""Serving cost from recorded intervals, on every metadata backend: the repository writes an
interval once (a retried write lands once) and reads a period; serving_items charges
max(reserved, used) CPU and the resident memory, gives each key its measured and shared CPU,
splits the idle rest by requests (or equally over the loaded pipelines without traffic), and
its items add up to the intervals' charges. A real server's intervals: tests/serving/test_usage."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from kiln.monitoring.cost.model import GIB, compute_usd
from kiln.monitoring.cost.serving import NO_PIPELINE, serving_items
from kiln.settings import Prices
from kiln.stores.metadata import MetadataStore
from kiln.stores.metadata.serving_usage import ServerIntervalRecord, ServingUsageRecord

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
PRICES = Prices(vcpu_hour=0.036, memory_gib_hour=0.0045)
SERVER = "host-a:101:1793620800000"


def interval(start: datetime, seconds: float, **values: object) -> ServerIntervalRecord:
    fields: dict[str, object] = {
        "server": SERVER,
        "interval_start": start,
        "interval_end": start + timedelta(seconds=seconds),
        "cpu_seconds": 0.5,
        "rss_bytes": 2 * GIB,
        "reserved_cpus": 1.0,
        "requests": 0,
        "pipelines": ["delays", "fares"],
    }
    fields.update(values)
    return ServerIntervalRecord(**fields)  # type: ignore[arg-type]


def usage(
    of: ServerIntervalRecord, pipeline: str, segment: str, **values: float
) -> ServingUsageRecord:
    return ServingUsageRecord(
        server=of.server,
        interval_start=of.interval_start,
        interval_end=of.interval_end,
        pipeline=pipeline,
        version=3,
        segment=segment,
        stage="production",
        requests=int(values.get("requests", 1)),
        rows=int(values.get("rows", 1)),
        cpu_seconds=values.get("cpu", 0.0),
        shared_cpu_seconds=values.get("shared", 0.0),
    )


def usd(cpu_seconds: float, gib_seconds: float) -> float:
    return sum(compute_usd(PRICES, cpu_seconds, gib_seconds, training=False))


def test_an_interval_is_written_once_and_read_by_period(store: MetadataStore) -> None:
    busy = interval(T0, 60, cpu_seconds=30.0, requests=400)
    rows = [
        usage(busy, "delays", "JFK", requests=100, rows=5000, cpu=20.0, shared=2.0),
        usage(busy, "fares", "LGA", requests=300, rows=300, cpu=2.0, shared=6.0),
    ]
    with store.unit_of_work() as uow:
        assert uow.serving_usage.record(busy, rows)
    with store.unit_of_work() as uow:  # a retry of a write that committed
        assert not uow.serving_usage.record(busy, rows)
    quiet = interval(busy.interval_end, 60, pipelines=["fares"])
    with store.unit_of_work() as uow:
        assert uow.serving_usage.record(quiet)
    with store.read() as uow:
        repo = uow.serving_usage
        end = T0 + timedelta(hours=1)
        assert repo.intervals(T0, end) == [busy, quiet]
        assert repo.usage(T0, end) == rows
        assert repo.usage(T0, end, pipeline="fares") == rows[1:]
        assert repo.usage(T0, end, pipeline="fares", whole_intervals=True) == rows
        assert repo.usage(T0, end, pipeline="nope", whole_intervals=True) == []
        assert repo.intervals(T0, end, pipeline="delays") == [busy]
        assert repo.intervals(T0, end, pipeline="fares") == [busy, quiet]
        assert repo.intervals(busy.interval_end + timedelta(seconds=1), end) == [quiet]
    with store.unit_of_work() as uow, pytest.raises(ValueError, match="naive"):
        uow.serving_usage.intervals(datetime(2026, 1, 1), end)


def test_serving_items_charge_max_of_reserved_and_used_and_split_idle(
    store: MetadataStore,
) -> None:
    # 60 s at 1 reserved vCPU, 30 s used: 30 s of it measured on keys, the rest idle
    busy = interval(T0, 60, cpu_seconds=30.0, requests=400, rss_bytes=GIB)
    rows = [
        usage(busy, "delays", "JFK", requests=100, rows=5000, cpu=20.0, shared=2.0),
        usage(busy, "fares", "LGA", requests=300, rows=300, cpu=2.0, shared=6.0),
    ]
    # no traffic: the idle cost is the loaded pipelines', equally
    quiet = interval(busy.interval_end, 60, cpu_seconds=0.6, pipelines=["delays", "fares"])
    # over its reservation: 90 s of CPU in 60 s, all charged
    hot = interval(quiet.interval_end, 60, cpu_seconds=90.0, requests=10, rss_bytes=GIB // 2)
    hot_rows = [usage(hot, "delays", "EWR", requests=10, rows=10, cpu=80.0, shared=10.0)]
    # starting, nothing loaded: still charged, to no pipeline
    empty = interval(hot.interval_end, 10, cpu_seconds=3.0, pipelines=[])
    with store.unit_of_work() as uow:
        uow.serving_usage.record(busy, rows)
        uow.serving_usage.record(quiet)
        uow.serving_usage.record(hot, hot_rows)
        uow.serving_usage.record(empty)
    until = T0 + timedelta(hours=1)
    items = serving_items(store, PRICES, since=T0, until=until)

    def of(pipeline: str, detail: str, at: datetime) -> list:
        return [i for i in items if (i.pipeline, i.detail, i.at) == (pipeline, detail, at)]

    (jfk,) = of("delays", "requests", busy.interval_end)
    assert (jfk.segment, jfk.version, jfk.predictions) == ("JFK", 3, 5000)
    assert jfk.cpu_seconds == pytest.approx(22.0)
    assert jfk.usd == pytest.approx(usd(22.0, 0.0))
    (jfk_idle,) = of("delays", "idle", busy.interval_end)
    assert jfk_idle.cpu_seconds == pytest.approx((60.0 - 30.0) * 100 / 400)
    assert jfk_idle.memory_gib_seconds == pytest.approx(60.0 * 100 / 400)
    (lga_idle,) = of("fares", "idle", busy.interval_end)
    assert lga_idle.cpu_seconds == pytest.approx(30.0 * 300 / 400)

    for name in ("delays", "fares"):
        (idle,) = of(name, "idle", quiet.interval_end)
        assert idle.cpu_seconds == pytest.approx(30.0)  # 60 s reserved, halved
        assert idle.memory_gib_seconds == pytest.approx(2 * 60.0 / 2)
        assert idle.predictions == 0 and idle.segment is None
    assert not of("delays", "requests", quiet.interval_end)

    (ewr,) = of("delays", "requests", hot.interval_end)
    assert ewr.cpu_seconds == pytest.approx(90.0)
    (ewr_idle,) = of("delays", "idle", hot.interval_end)
    assert ewr_idle.cpu_seconds == pytest.approx(0.0)
    assert ewr_idle.memory_gib_seconds == pytest.approx(30.0)
    (nobody,) = of(NO_PIPELINE, "idle", empty.interval_end)
    assert nobody.cpu_seconds == pytest.approx(10.0)

    charged = usd(60, 60) + usd(60, 120) + usd(90, 30) + usd(10, 20)
    assert sum(i.usd or 0.0 for i in items) == pytest.approx(charged)
    assert all(i.kind == "serving" for i in items)
    assert sum(i.predictions for i in items) == 5310

    for name in ("delays", "fares", NO_PIPELINE):  # read in the query, the same items
        one = serving_items(store, PRICES, since=T0, until=until, pipeline=name)
        assert one == [i for i in items if i.pipeline == name]
    later = serving_items(store, PRICES, since=quiet.interval_end, until=until)
    assert {i.at for i in later} == {quiet.interval_end, hot.interval_end, empty.interval_end}


def test_a_shadow_predicts_nothing_and_takes_no_idle_share(store: MetadataStore) -> None:
    busy = interval(T0, 60, cpu_seconds=10.0, requests=100, rss_bytes=GIB)
    answered = usage(busy, "delays", "JFK", requests=100, rows=100, cpu=4.0, shared=2.0)
    copies = replace(answered, version=4, stage="shadow", cpu_seconds=3.0, shared_cpu_seconds=0.0)
    with store.unit_of_work() as uow:
        uow.serving_usage.record(busy, [answered, copies])
    items = serving_items(store, PRICES, since=T0, until=T0 + timedelta(hours=1))
    assert sum(i.predictions for i in items) == 100
    shadow = [i for i in items if i.version == 4]
    assert [(i.detail, i.predictions) for i in shadow] == [("requests", 0)]
    assert shadow[0].cpu_seconds == pytest.approx(3.0)
    (idle,) = [i for i in items if i.detail == "idle"]
    assert idle.version == 3 and idle.cpu_seconds == pytest.approx(60.0 - 9.0)
