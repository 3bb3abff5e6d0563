"""The monitoring gauges, set from the database and served as Prometheus text over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from kiln.config.monitor import LogChannel
from kiln.monitoring.alerts import update_alerts
from kiln.monitoring.findings import Finding
from kiln.monitoring.gauges import MonitorGauges
from kiln.monitoring.notify import deliver_due
from kiln.stores import MetadataStore

START = datetime(2013, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NOW = START + 10 * DAY


def window(store: MetadataStore, pipeline: str, n: int, state: str, rows: int = 500) -> None:
    with store.unit_of_work() as uow:
        uow.windows.store(
            pipeline, START + n * DAY, START + (n + 1) * DAY, 86400, rows, state,  # type: ignore[arg-type]
            None, {},
        )  # fmt: skip


def judge(store: MetadataStore, pipeline: str, n: int, *findings: Finding) -> None:
    with store.unit_of_work() as uow:
        update_alerts(
            uow, pipeline, START + n * DAY, START + (n + 1) * DAY, findings, 1, ["log"], NOW
        )


def sample(g: MonitorGauges, name: str, **labels: str) -> float | None:
    return g.registry.get_sample_value(name, labels)


def test_gauges_follow_the_database_and_are_served(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        for name in ("flights-delay", "taxi-fares", "new-one"):
            uow.pipelines.upsert(name, "team", "", "kiln.yaml")
    window(store, "flights-delay", 0, "ok")
    window(store, "flights-delay", 1, "alert")
    window(store, "taxi-fares", 1, "no_traffic", rows=0)
    drift = Finding("drift:temp:EWR", "drift", "alert", 0.4, 0.25, "temp psi 0.4")
    errors = Finding("errors", "errors", "warn", 0.02, 0.01, "2% errors")
    p99 = Finding("latency:p99", "latency", "warn", 900.0, 800.0, "p99 900 ms")
    judge(store, "flights-delay", 1, drift, errors, p99)

    g = MonitorGauges()
    with store.read() as uow:
        g.refresh(uow)
    assert sample(g, "kiln_monitor_state", pipeline="flights-delay") == 2
    assert sample(g, "kiln_monitor_state", pipeline="taxi-fares") == -1
    assert sample(g, "kiln_monitor_state", pipeline="new-one") is None  # never monitored
    fd = {"pipeline": "flights-delay"}
    assert sample(g, "kiln_alerts_open", **fd, kind="drift", level="alert") == 1
    assert sample(g, "kiln_alerts_open", **fd, kind="errors", level="warn") == 1
    assert sample(g, "kiln_alerts_open", **fd, kind="latency", level="warn") == 1
    assert sample(g, "kiln_alert_deliveries_pending") == 3

    server = g.serve(0, addr="127.0.0.1")
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        server.server_close()
    assert 'kiln_monitor_state{pipeline="flights-delay"} 2.0' in text
    assert 'kiln_alerts_open{kind="drift",level="alert",pipeline="flights-delay"} 1.0' in text
    assert "kiln_alert_deliveries_pending 3.0" in text

    # recovery: the drift resolves, the outbox is sent, the next window is ok
    window(store, "flights-delay", 2, "warn")
    judge(store, "flights-delay", 2, Finding("drift:temp:EWR", "drift", "ok", 0.01, 0.1, "ok"))
    deliver_due(store.unit_of_work, "flights-delay", [LogChannel()], clock=lambda: NOW)
    with store.read() as uow:
        g.refresh(uow)
    assert sample(g, "kiln_monitor_state", pipeline="flights-delay") == 1
    assert sample(g, "kiln_alerts_open", **fd, kind="drift", level="alert") == 0  # kept as 0
    assert sample(g, "kiln_alerts_open", **fd, kind="errors", level="warn") == 1
    assert sample(g, "kiln_alert_deliveries_pending") == 0
