"""`kiln monitor report`: the stored windows and alert episodes of a pipeline, read back typed and
drawn as one HTML page that opens offline.

The windows are computed here from the real 2013 flights (tests/monitoring/flight_windows.py),
stored in a real metadata store (SQLite, and PostgreSQL for the query), and the page is opened
in Debian's headless Chromium, which must draw every chart without one network request.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kiln.errors import NotFoundError
from kiln.monitoring import charts
from kiln.monitoring.findings import ALL, WindowResult
from kiln.monitoring.history import MonitorHistory, StoredWindow, load_history
from kiln.monitoring.monitor import Monitor
from kiln.monitoring.report import CHARTS, render_report, write_report
from kiln.settings import Settings
from kiln.stores import MetadataStore, Stores, open_stores
from kiln.stores.metadata import tables as t
from tests.monitoring import browser
from tests.monitoring.flight_windows import PIPELINE, flights, windows
from tests.monitoring.monitor_support import P, production, serve
from tests.monitoring.monitor_support import flights as support_flights

NEEDS_CHROMIUM = pytest.mark.skipif(
    not browser.available() and os.environ.get("KILN_REQUIRE_CHROMIUM", "") in ("", "0"),
    reason="needs Debian's chromium: apt-get install chromium (KILN_REQUIRE_CHROMIUM=1 in CI)",
)
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"></script><script>window.pwned=1</script>"
"""Text that a browser would run if the page did not escape it (an ack note, a file name)."""


@pytest.fixture(scope="module")
def frame() -> Any:
    return flights()


@pytest.fixture(scope="module")
def results(frame: Any) -> list[WindowResult]:
    return windows(frame)


def store_windows(
    metadata: MetadataStore, results: list[WindowResult], seconds: int, year: int = 2026
) -> None:
    table = t.table_of(t.MonitorWindow)
    computed = datetime(year, 1, 1, tzinfo=UTC)
    with metadata.engine.begin() as conn:
        for i, r in enumerate(results):
            conn.execute(
                sa.insert(table).values(
                    pipeline=r.pipeline, window_start=r.start, window_end=r.end,
                    window_seconds=seconds, computed_at=computed + timedelta(minutes=i),
                    rows=r.rows, state=r.state, worst=r.worst.check if r.worst else None,
                    summary=r.to_dict(),
                )
            )  # fmt: skip


def store_alerts(metadata: MetadataStore, results: list[WindowResult]) -> dict[str, int]:
    """Two episodes from the windows' own findings: drift of temp at JFK (resolved, acked with
    a hostile note, and the retraining run it started) and the live MAE at EWR (open)."""
    with metadata.unit_of_work() as uow:
        uow.pipelines.upsert(PIPELINE, "tests@example.com", "flights", "kiln.yaml")
    table = t.table_of(t.Alert)
    ids: dict[str, int] = {}
    for check, status in (("drift:temp:JFK", "resolved"), ("performance:mae:EWR", "open")):
        hits = [(r, f) for r in results for f in r.findings if f.check == check]
        first, finding = hits[0]
        last = hits[-1][0]
        with metadata.engine.begin() as conn:
            ids[check] = conn.execute(
                sa.insert(table).values(
                    pipeline=PIPELINE, check=check, kind=finding.kind, level=finding.level,
                    status=status, streak=len(hits), opened_at=first.end, first_window=first.start,
                    last_window=last.start, value=finding.value, threshold=finding.threshold,
                    message=finding.message, details={}, notified_at=first.end,
                    resolved_at=last.end if status == "resolved" else None,
                    acked_by="ops" if status == "resolved" else None,
                    acked_at=last.end if status == "resolved" else None,
                    ack_note=HOSTILE if status == "resolved" else None,
                ).returning(table.c.id)
            ).scalar_one()  # fmt: skip
    with metadata.unit_of_work() as uow:
        uow.runs.create(PIPELINE, "drift", "x", "d" * 64, "kiln.yaml", "h", 1,
                        alert_id=ids["drift:temp:JFK"])  # fmt: skip
    return ids


@pytest.fixture
def home(tmp_path: Path, results: list[WindowResult]) -> Iterator[Path]:
    """A Kiln home whose metadata store holds the weekly windows and two alert episodes, one
    window naming a corrupt capture file with a hostile name."""
    home = tmp_path / ".kiln"
    stores = open_stores(Settings(home=home), upgrade=True)
    try:
        marked = [*results]
        marked[-1] = WindowResult.from_dict(
            results[-1].to_dict() | {"skipped": {f"captures/{HOSTILE}.parquet": "not Parquet"}}
        )
        store_windows(stores.metadata, marked, 7 * 86400)
        store_alerts(stores.metadata, results)
    finally:
        stores.close()
    yield home


def test_history_reads_back_windows_alerts_and_runs(
    store: MetadataStore, results: list[WindowResult]
) -> None:
    store_windows(store, results[:3], 86400, year=2025)  # a window length used before
    store_windows(store, results, 7 * 86400)
    ids = store_alerts(store, results)

    history = load_history(store, PIPELINE)

    assert history.window_seconds == 7 * 86400  # the most recently computed windows' length
    assert history.other_lengths == {86400: 3}  # left out, counted
    assert len(load_history(store, PIPELINE, window_seconds=86400).windows) == 3
    assert [w.result for w in history.windows] == results  # the whole typed result, round trip
    assert [w.state for w in history.windows] == [r.state for r in results]
    assert [a.check for a in history.alerts] == ["drift:temp:JFK", "performance:mae:EWR"]
    drift = history.alerts[0]
    assert drift.id == ids["drift:temp:JFK"] and drift.ack_note == HOSTILE
    assert [(r.trigger, r.status) for r in drift.runs] == [("drift", "running")]
    assert history.alerts[1].runs == []

    since = load_history(store, PIPELINE, since=datetime(2013, 10, 1, tzinfo=UTC),
                         window_seconds=7 * 86400)  # fmt: skip
    assert since.windows[0].start >= datetime(2013, 10, 1, tzinfo=UTC)
    assert len(since.windows) == sum(r.start >= datetime(2013, 10, 1, tzinfo=UTC) for r in results)
    with pytest.raises(NotFoundError, match="no pipeline 'nope'"):
        load_history(store, "nope")


def test_page_embeds_plotly_once_escapes_data_and_references_nothing_outside(
    home: Path, tmp_path: Path
) -> None:
    stores = open_stores(Settings(home=home))
    try:
        history = load_history(stores.metadata, PIPELINE)
    finally:
        stores.close()
    path = write_report(history, tmp_path / "report.html")
    html = path.read_text()

    assert len(re.findall(r"\* plotly\.js v\d", html)) == 1  # the bundle's banner, once
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", html)  # all inline
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.S)  # plotly.js left out
    assert not re.search(r"(https?:)?//", markup)  # the page names no remote address
    for div_id, *_ in CHARTS:
        assert f'id="{div_id}"' in html
    assert "<script>window.pwned" not in html and "&lt;script&gt;window.pwned" in html
    assert "Monitoring of flights-delay" in html and "26 of 7d" in html
    # the figures are the stored ones: the drift chart carries the overall temp PSI per week
    temp = [d.value for w in history.windows for d in w.result.drift
            if d.segment == ALL and d.feature == "temp"]  # fmt: skip
    figure = _figure(html, "chart-drift")
    trace = next(tr for tr in figure["data"] if tr["name"] == "temp")
    assert trace["y"] == pytest.approx(temp)
    assert [s for s in figure["layout"]["annotations"] if s["text"] == "v2 serves"]


def test_unjudged_cells_and_equal_thresholds_still_draw(frame: Any) -> None:
    """Segments too thin to judge (every value None) are blank cells that say how many rows
    they had; thresholds with warn equal to alert keep an increasing color scale."""
    thin = windows(frame, min_rows=10**6)[:2]
    stored = [
        StoredWindow(r.start, r.end, 7 * 86400, r.end, r.rows, r.state, None, r) for r in thin
    ]
    heat = charts.drift_heatmap(stored)
    assert heat is not None
    cells = [c for row in heat.data[0].text for c in row]
    assert cells and all(c.endswith(" rows") for c in cells)
    assert all(v is None for row in heat.data[0].z for v in row)
    assert charts._scale(0.2, 0.2, 0.4) == [[0.0, "#e8f6ef"], [0.5, "#fdebd0"], [1.0, "#922b21"]]
    html = render_report(MonitorHistory(PIPELINE, stored, [], 7 * 86400))
    assert html.count("plotly.js v") == 1 and "chart-heatmap" in html


def _figure(html: str, div_id: str) -> dict[str, Any]:
    """The data and layout plotly.io wrote for the chart ``div_id``."""
    call = re.search(
        rf'Plotly\.newPlot\(\s*"{div_id}",\s*(\[.*?\]),\s*(\{{.*?\}}),\s*\{{"displaylogo"', html,
        re.S,
    )  # fmt: skip
    assert call, f"no Plotly.newPlot call for {div_id}"
    return {"data": json.loads(call.group(1)), "layout": json.loads(call.group(2))}


def test_an_empty_history_is_a_page_that_says_what_to_run(tmp_path: Path) -> None:
    stores = open_stores(Settings(home=tmp_path / ".kiln"), upgrade=True)
    try:
        with stores.metadata.unit_of_work() as uow:
            uow.pipelines.upsert(PIPELINE, "tests@example.com", "flights", "kiln.yaml")
        html = render_report(load_history(stores.metadata, PIPELINE))
    finally:
        stores.close()
    assert "plotly.js" not in html
    assert "none stored yet: `kiln monitor` computes them" in html
    assert html.count('class="empty"') == len(CHARTS) + 2  # every chart, the alerts, windows


@pytest.mark.slow
@NEEDS_CHROMIUM
def test_report_opens_offline_in_chromium_with_every_chart_drawn(
    home: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "report.html"
    done = cli("--home", str(home), "monitor", "report", PIPELINE, "--html", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "26 windows from 2013-07-01 00:00 to 2013-12-30 00:00 UTC" in done.stdout

    charts = [div_id for div_id, *_ in CHARTS]
    probes = {
        "drawn": "Array.from(document.querySelectorAll('.js-plotly-plot')).filter("
                 "d => d.querySelector('svg.main-svg')).map(d => d.id)",
        "drift_lines": "document.querySelectorAll('#chart-drift .scatterlayer .trace').length",
        "heatmap": "document.querySelectorAll('#chart-heatmap .heatmaplayer .hm').length",
        "menu": "document.querySelectorAll('#chart-heatmap .updatemenu-container').length",
        "alerts": "document.querySelectorAll('#alerts tr').length",
        "note": "document.querySelector('#alerts').innerText.includes('window.pwned=1')",
        "injected": "[document.querySelectorAll('img').length, window.pwned === undefined,"
                    " document.title]",
    }  # fmt: skip
    drawn = f"document.querySelectorAll('svg.main-svg').length >= {len(charts)}"
    seen = browser.visit(out.as_uri(), probes, ready=drawn)

    assert seen.network == [], "the page asked the network for something"
    assert seen.errors == []
    values = seen.values
    assert sorted(values["drawn"]) == sorted(charts)
    assert values["drift_lines"] == 8  # six numeric features, the carrier, the prediction
    assert values["heatmap"] == 1 and values["menu"] == 1
    assert values["alerts"] == 3  # the header and two episodes
    assert values["note"] is True  # the hostile ack note is shown as text ...
    assert values["injected"] == [0, True, "Monitoring of flights-delay"]  # ... never run


@pytest.mark.slow
@NEEDS_CHROMIUM
def test_the_browser_check_sees_a_page_that_asks_the_network(tmp_path: Path) -> None:
    """The control: the same visit reports a page that loads its script from a CDN."""
    page = tmp_path / "cdn.html"
    page.write_text('<html><head><script src="http://127.0.0.1:9/plotly.min.js"></script>'
                    "</head><body><p>hi</p></body></html>")  # fmt: skip
    seen = browser.visit(page.as_uri(), {}, ready="true")
    assert seen.network == ["http://127.0.0.1:9/plotly.min.js"]


@pytest.mark.slow
def test_cli_refuses_a_bad_since_and_names_an_unknown_pipeline(
    home: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "r.html"
    bad = cli("--home", str(home), "monitor", "report", PIPELINE, "--html", str(out),
              "--since", "last tuesday", cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "--since" in bad.stderr and "2013-07-01" in bad.stderr
    unknown = cli("--home", str(home), "monitor", "report", "nope", "--html", str(out),
                  cwd=tmp_path)  # fmt: skip
    assert unknown.returncode == 6 and "no pipeline 'nope'" in unknown.stderr
    assert "kiln status" in unknown.stderr
    since = cli("--home", str(home), "monitor", "report", PIPELINE, "--html", str(out),
                "--since", "2013-12-01", cwd=tmp_path)  # fmt: skip
    assert since.returncode == 0, since.stderr
    assert "4 windows from 2013-12-02" in since.stdout
    assert not os.path.exists(tmp_path / "missing" / "r.html")
    missing = cli("--home", str(home), "monitor", "report", PIPELINE, "--html",
                  str(tmp_path / "missing" / "r.html"), cwd=tmp_path)  # fmt: skip
    assert missing.returncode == 7 and "does not exist" in missing.stderr


@pytest.mark.slow
def test_report_of_a_real_monitor_pass(
    make_config: Callable[..., Any], settings: Settings, stores: Stores, warehouse: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A version trained on January-February serves four real July days (one in ten of July 2
    answered 500), the real monitor pass stores its windows and opens its alerts: the page
    draws exactly those figures."""
    loaded = make_config(monitor={"window": "1d", "drift": {"alert_by": "segment"}})
    version = production(settings, stores, loaded)
    served = support_flights(warehouse, date(2013, 7, 1), date(2013, 7, 4))
    july_2 = [i for i, r in enumerate(served) if r["time_hour"].date() == date(2013, 7, 2)]
    serve(settings, version, served, failing=set(july_2[::10]))
    results = Monitor(settings, stores).run(P, loaded.config, now=datetime(2013, 7, 5, tzinfo=UTC))
    assert len(results) == 4

    history = load_history(stores.metadata, P)
    assert [w.result for w in history.windows] == results
    html = render_report(history)

    drift = _figure(html, "chart-drift")
    temp = next(tr for tr in drift["data"] if tr["name"] == "temp")
    expected = [next(d.value for d in r.drift if d.segment == ALL and d.feature == "temp")
                for r in results]  # fmt: skip
    assert temp["y"] == pytest.approx(expected)
    errors = _figure(html, "chart-errors")["data"][0]
    rates = [next(x.error_rate for x in r.latency if x.segment == ALL) for r in results]
    assert errors["y"] == pytest.approx(rates) and errors["y"][1] == pytest.approx(0.1, abs=0.01)
    latency = {tr["name"]: tr["y"] for tr in _figure(html, "chart-latency")["data"]}
    assert latency[f"v{version.number} p99"] == pytest.approx(
        [next(x.p99_ms for x in r.latency if x.segment == ALL) for r in results]
    )
    assert history.alerts and any(a.check == "drift:temp:__all__" for a in history.alerts)
    assert "drift:temp:__all__" in html
