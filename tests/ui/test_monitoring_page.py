"""`/pipelines/{name}/monitoring` and its API over windows computed from the real 2013 flights
(tests/monitoring/flight_windows.py) and stored as the monitor stores them, with the alert
episodes of tests/monitoring/test_report.py (one resolved with a hostile ack note, one open)."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kiln.errors import NotFoundError
from kiln.monitoring.findings import ALL, PREDICTION, WindowResult
from kiln.monitoring.monitor import Monitor
from kiln.registry.queries.monitoring import monitoring_rows
from kiln.settings import Settings
from kiln.stores import MetadataStore, Stores
from tests.monitoring.flight_windows import PIPELINE, flights, windows
from tests.monitoring.monitor_support import P, production, serve
from tests.monitoring.monitor_support import flights as support_flights
from tests.monitoring.test_report import HOSTILE, store_alerts, store_windows
from tests.ui.conftest import sign_in

WEEK = 7 * 86400


@pytest.fixture(scope="module")
def results() -> list[WindowResult]:
    return windows(flights())


@pytest.fixture
def monitored(stores: Stores, results: list[WindowResult]) -> dict[str, int]:
    """The flights pipeline (owned by olga) with its weekly windows and two alert episodes."""
    ids = store_alerts(stores.metadata, results)
    store_windows(stores.metadata, results, WEEK)
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert(PIPELINE, "olga", "flights", "kiln.yaml")
    return ids


def _figure(html: str, chart_id: str) -> dict[str, Any]:
    found = re.search(
        rf'<script type="application/json" id="{chart_id}">(.*?)</script>', html, re.S
    )
    assert found, f"no chart {chart_id}"
    figure: dict[str, Any] = json.loads(found.group(1))
    return figure


def _section(html: str, section: str) -> str:
    found = re.search(rf'<section id="{section}".*?</section>', html, re.S)
    assert found, f"no section#{section}"
    return found.group(0)


def test_heatmap_shows_the_newest_windows_stored_drift(
    client: TestClient, monitored: dict[str, int], results: list[WindowResult]
) -> None:
    sign_in(client, "vic")
    page = client.get(f"/pipelines/{PIPELINE}/monitoring")
    assert page.status_code == 200
    for hook in ("drift-heatmap", "live-metric", "latency", "alerts"):
        assert f'<section id="{hook}"' in page.text
    figure = _figure(_section(page.text, "drift-heatmap"), "heatmap")
    (trace,) = figure["data"]
    latest = results[-1]
    drift = {(d.feature, d.segment): d.value for d in latest.drift if d.version == 2}
    segments = sorted({s for _, s in drift}, key=lambda s: (s != ALL, s))
    features = sorted({f for f, _ in drift}, key=lambda f: (f == PREDICTION, f))
    assert trace["x"] == ["all" if s == ALL else s for s in segments]
    assert trace["y"] == ["prediction" if f == PREDICTION else f for f in features]
    assert trace["z"] == [[drift[(f, s)] for s in segments] for f in features]

    api = client.get(f"/api/pipelines/{PIPELINE}/monitoring").json()
    assert api["drift"]["window_start"] == latest.start.isoformat()
    assert {(c["feature"], c["segment"]): c["value"] for c in api["drift"]["cells"]} == drift
    assert api["figures"]["drift_heatmap"] == figure
    assert [w["start"] for w in api["windows"]] == [r.start.isoformat() for r in results]
    assert [w["state"] for w in api["windows"]] == [r.state for r in results]


def test_live_metric_latency_and_errors_follow_the_windows(
    client: TestClient, monitored: dict[str, int], results: list[WindowResult]
) -> None:
    sign_in(client, "vic")
    page = client.get(f"/pipelines/{PIPELINE}/monitoring").text
    live = _figure(_section(page, "live-metric"), "live")
    overall = next(t for t in live["data"] if t["name"] == "all live")
    assert overall["y"] == [
        next(p.value for p in r.performance if p.segment == ALL) for r in results
    ]
    training = next(t for t in live["data"] if t["name"] == "all training")
    assert training["line"]["dash"] == "dash"
    latency = _figure(_section(page, "latency"), "latency-ms")
    p99 = {t["name"]: t["y"] for t in latency["data"]}
    assert p99["v2 p99"] == [r.latency[0].p99_ms for r in results if r.versions == [2]]
    marks = [a["text"] for a in latency["layout"]["annotations"]]
    assert marks == ["v2 serves"]  # the promotion of October
    errors = _figure(_section(page, "latency"), "errors")
    assert {t["name"] for t in errors["data"]} == {"v1", "v2"}


def test_alerts_open_first_with_an_ack_form_for_those_who_may_change_it(
    client: TestClient, monitored: dict[str, int]
) -> None:
    open_id, resolved_id = monitored["performance:mae:EWR"], monitored["drift:temp:JFK"]
    for name in ("ada", "olga"):
        csrf = sign_in(client, name)
        alerts = _section(client.get(f"/pipelines/{PIPELINE}/monitoring").text, "alerts")
        ids = [int(i) for i in re.findall(r'<tr data-alert-id="(\d+)"', alerts)]
        assert ids == [open_id, resolved_id]
        forms = re.findall(r'<form method="post" action="([^"]+)">(.*?)</form>', alerts, re.S)
        assert [a for a, _ in forms] == [f"/pipelines/{PIPELINE}/actions/ack"] * 2
        body = forms[0][1]
        assert f'name="csrf_token" value="{csrf}"' in body
        assert f'name="alert_id" value="{open_id}"' in body
        assert f'name="back" value="/pipelines/{PIPELINE}/monitoring"' in body
        assert 'name="note"' in body and 'type="submit"' in body
    sign_in(client, "vic")
    page = client.get(f"/pipelines/{PIPELINE}/monitoring").text
    assert "/actions/" not in page and re.search(r'<tr data-alert-id="\d+"', page)
    api = client.get(f"/api/pipelines/{PIPELINE}/monitoring").json()
    assert [a["id"] for a in api["alerts"]] == [open_id, resolved_id]
    assert api["may_ack"] is False and api["alerts"][1]["ack_note"] == HOSTILE


def test_notes_and_names_from_the_registry_are_shown_escaped(
    client: TestClient, monitored: dict[str, int], stores: Stores, results: list[WindowResult]
) -> None:
    hostile = WindowResult.from_dict(
        results[-1].to_dict()
        | {"start": (results[-1].start + timedelta(days=7)).isoformat(),
           "end": (results[-1].end + timedelta(days=7)).isoformat(),
           "drift": [d | {"segment": HOSTILE} for d in results[-1].to_dict()["drift"]]}
    )  # fmt: skip
    store_windows(stores.metadata, [hostile], WEEK, year=2027)
    sign_in(client, "vic")
    page = client.get(f"/pipelines/{PIPELINE}/monitoring").text
    assert HOSTILE not in page and "<script>window.pwned" not in page
    assert "&lt;img src=x onerror=" in page  # the ack note, as text
    figure = _figure(page, "heatmap")
    assert all("<img" not in x for x in figure["data"][0]["x"])  # plotly renders some HTML


def test_a_pipeline_not_monitored_yet_says_why_and_unknown_ones_are_404(
    client: TestClient, stores: Stores
) -> None:
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert("quiet", "olga", "never served", "kiln.yaml")
    sign_in(client, "vic")
    page = client.get("/pipelines/quiet/monitoring")
    assert page.status_code == 200 and "Not monitored yet" in page.text
    assert 'type="application/json"' not in page.text  # no empty frames
    assert "No labelled requests yet" in page.text
    api = client.get("/api/pipelines/quiet/monitoring").json()
    assert api["state"] == "not monitored yet" and api["windows"] == []
    assert api["figures"] == dict.fromkeys(api["figures"])  # every one None
    missing = client.get("/pipelines/nope/monitoring")
    assert missing.status_code == 404 and "nope" in missing.text and "Traceback" not in missing.text
    assert client.get("/api/pipelines/nope/monitoring").json()["error"] == "not_found"


def test_the_page_reads_only_the_newest_windows_and_stays_fast(
    client: TestClient, stores: Stores, results: list[WindowResult]
) -> None:
    """250 weekly windows stored: the page shows the newest 200 and says older ones exist."""
    many = []
    for i in range(250):
        r = results[i % len(results)]
        shift = timedelta(days=7 * i) - (r.start - results[0].start)
        doc = r.to_dict() | {
            "start": (r.start + shift).isoformat(),
            "end": (r.end + shift).isoformat(),
        }
        many.append(WindowResult.from_dict(doc))
    store_windows(stores.metadata, many, WEEK)
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert(PIPELINE, "olga", "flights", "kiln.yaml")
    sign_in(client, "vic")
    client.get(f"/pipelines/{PIPELINE}/monitoring")  # warm
    started = time.perf_counter()
    page = client.get(f"/pipelines/{PIPELINE}/monitoring")
    took = time.perf_counter() - started
    assert 'data-windows="200"' in page.text and "older ones are left out" in page.text
    api = client.get(f"/api/pipelines/{PIPELINE}/monitoring").json()
    assert api["more_windows"] is True
    assert api["windows"][-1]["start"] == many[-1].start.isoformat()
    assert took < 1.5, f"the page took {took:.3f} s"  # generous: 2 shared cores; see the report


def test_the_query_reads_the_same_parts_on_every_backend(
    store: MetadataStore, results: list[WindowResult]
) -> None:
    """The chart parts come out of the stored JSON by the database (JSON_EXTRACT, ``->``)."""
    ids = store_alerts(store, results)
    store_windows(store, results[:3], 86400, year=2025)  # an older window length: left out
    store_windows(store, results, WEEK)
    rows = monitoring_rows(store, PIPELINE, limit=12)
    assert rows.window_seconds == WEEK and rows.more_windows
    assert [w.start for w in rows.windows] == [r.start for r in results[-12:]]
    newest = rows.windows[-1]
    assert newest.performance == results[-1].to_dict()["performance"]
    assert newest.latency == results[-1].to_dict()["latency"]
    assert newest.drift == results[-1].to_dict()["drift"]
    assert rows.windows[1].drift is None and rows.windows[2].drift  # the look-back: 10
    assert [a.id for a in rows.alerts] == [ids["performance:mae:EWR"], ids["drift:temp:JFK"]]
    with pytest.raises(NotFoundError, match="no pipeline 'nope'"):
        monitoring_rows(store, "nope")


@pytest.mark.slow
def test_the_page_of_a_real_monitor_pass(
    client: TestClient,
    make_config: Callable[..., Any],
    settings: Settings,
    stores: Stores,
    warehouse: Path,
) -> None:
    """A real version serves four real July days (one in ten of July 2 answered 500); the real
    monitor pass stores its windows and opens its alerts; the page draws exactly those."""
    loaded = make_config(monitor={"window": "1d", "drift": {"alert_by": "segment"}})
    version = production(settings, stores, loaded)
    served = support_flights(warehouse, date(2013, 7, 1), date(2013, 7, 4))
    july_2 = [i for i, r in enumerate(served) if r["time_hour"].date() == date(2013, 7, 2)]
    serve(settings, version, served, failing=set(july_2[::10]))
    results = Monitor(settings, stores).run(P, loaded.config, now=datetime(2013, 7, 5, tzinfo=UTC))
    assert len(results) == 4

    sign_in(client, "ada")
    page = client.get(f"/pipelines/{P}/monitoring").text
    newest = next(r for r in results[::-1] if r.drift)
    trace = _figure(page, "heatmap")["data"][0]
    cells = {(d.feature, d.segment): d.value for d in newest.drift if d.version == version.number}
    for f, row in zip(trace["y"], trace["z"], strict=True):
        for s, z in zip(trace["x"], row, strict=True):
            key = (PREDICTION if f == "prediction" else f, ALL if s == "all" else s)
            assert z == cells[key], key
    errors = _figure(page, "errors")["data"][0]
    rates = [next(x.error_rate for x in r.latency if x.segment == ALL) for r in results]
    assert errors["y"] == pytest.approx(rates) and errors["y"][1] == pytest.approx(0.1, abs=0.01)
    alerts = client.get(f"/api/pipelines/{P}/monitoring").json()["alerts"]
    assert any(a["check"] == "drift:temp:__all__" for a in alerts)
    ids = re.findall(r'<tr data-alert-id="(\d+)"', page)
    assert ids == [str(a["id"]) for a in alerts]


def test_the_ack_form_acknowledges_the_alert_and_comes_back(
    client: TestClient, monitored: dict[str, int]
) -> None:
    """The form as the page renders it, posted as a browser would (the action route is the
    actions branch's: skipped until it is merged)."""
    if importlib.util.find_spec("kiln.ui.pages.actions") is None:
        pytest.skip("the action route (kiln/ui/pages/actions.py) is not on this branch yet")
    sign_in(client, "olga")
    page = client.get(f"/pipelines/{PIPELINE}/monitoring").text
    form = re.search(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S)
    assert form is not None
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form[2]))
    fields["note"] = "looking <b>into</b> it"
    done = client.post(form[1], data=fields)
    assert done.status_code == 303
    assert done.headers["location"] == f"/pipelines/{PIPELINE}/monitoring"
    after = client.get(done.headers["location"]).text
    row = re.search(rf'<tr data-alert-id="{fields["alert_id"]}".*?</tr>', after, re.S)
    assert row is not None and "olga" in row[0]
    assert "looking &lt;b&gt;into&lt;/b&gt; it" in row[0]
