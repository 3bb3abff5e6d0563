"""The catalogue page and /api/pipelines through the app: rows, escaping of what users typed,
filters, the pager, a page past the end, and a clear 400 for a filter value that does not exist."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from kiln.stores import MetadataStore
from tests.ui.conftest import sign_in

SCRIPT = "<script>alert(1)</script>"


def _metadata(client: TestClient) -> MetadataStore:
    found: MetadataStore = client.app.state.kiln.stores.metadata  # type: ignore[attr-defined]
    return found


def _fill(client: TestClient, count: int = 3) -> None:
    """``count`` pipelines p00.. (owner olga, then data-team), each with a production v1 and a
    blocked v2 whose replay gate failed; one more whose owner and description hold a script."""
    with _metadata(client).unit_of_work() as uow:
        for i in range(count):
            name = f"p{i:02d}"
            uow.pipelines.upsert(name, "olga" if i % 2 == 0 else "data-team", f"delays {i}", "k")
            for stage in ("production", "blocked"):
                run = uow.runs.create(name, "schedule", "", "c" * 64, "kiln.yaml", "host", 1)
                uow.runs.mark_finished(run.id, "succeeded")
                v = uow.versions.register(name, run.id, "d" * 64, {}, {})
                uow.versions.set_stage(name, v.version, stage)  # type: ignore[arg-type]
            uow.gates.record(name, 2, "replay", "failed", "worse", {})
        uow.pipelines.upsert("zz-evil", SCRIPT, f"desc {SCRIPT}", "k")


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr data-pipeline="([^"]+)"', html)


def test_the_catalogue_lists_every_pipeline_with_its_columns(client: TestClient) -> None:
    _fill(client)
    sign_in(client, "vic")
    r = client.get("/")
    assert r.status_code == 200
    assert _rows(r.text) == ["p00", "p01", "p02", "zz-evil"]
    assert 'data-total="4"' in r.text and 'class="pipeline" href="/pipelines/p00"' in r.text
    assert 'data-stage="blocked"' in r.text and 'data-outcome="failed"' in r.text
    assert 'data-state="not monitored yet"' in r.text


def test_an_owner_and_description_holding_a_script_are_shown_escaped(
    client: TestClient,
) -> None:
    _fill(client, 0)
    sign_in(client, "vic")
    page = client.get("/").text
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    api = client.get("/api/pipelines").json()
    assert api["rows"][0]["owner"] == SCRIPT  # JSON carries the text as it is


def test_filters_and_search_narrow_the_rows_and_the_total(client: TestClient) -> None:
    _fill(client)
    sign_in(client, "vic")
    assert _rows(client.get("/?owner=olga").text) == ["p00", "p02"]
    assert _rows(client.get("/?stage=blocked&q=DELAYS+1").text) == ["p01"]
    assert _rows(client.get("/?state=not+monitored+yet&stage=&owner=").text) == [
        "p00", "p01", "p02", "zz-evil",
    ]  # fmt: skip
    api = client.get("/api/pipelines", params={"owner": "data-team"}).json()
    assert api["total"] == 1 and [r["pipeline"] for r in api["rows"]] == ["p01"]
    assert api["rows"][0]["production"] == 1 and api["rows"][0]["latest_stage"] == "blocked"
    assert api["rows"][0]["gates"] == {"outcome": "failed", "gates": {"replay": "failed"}}
    assert api["owners"] == [SCRIPT, "data-team", "olga"]


def test_the_pager_links_keep_the_filters_and_a_page_past_the_end_links_back(
    client: TestClient,
) -> None:
    _fill(client, 5)
    sign_in(client, "vic")
    first = client.get("/?per_page=2&q=delays").text
    assert _rows(first) == ["p00", "p01"] and 'data-total="5"' in first
    assert 'rel="next" href="/?q=delays&amp;per_page=2&amp;page=2"' in first
    assert 'rel="prev"' not in first
    last = client.get("/?per_page=2&q=delays&page=3").text
    assert _rows(last) == ["p04"] and 'rel="next"' not in last and 'rel="prev"' in last
    beyond = client.get("/?per_page=2&page=9")
    assert beyond.status_code == 200 and _rows(beyond.text) == []
    assert 'href="/?per_page=2&amp;page=3"' in beyond.text  # back to the last page
    api = client.get("/api/pipelines", params={"per_page": 2, "page": 9}).json()
    assert api["rows"] == [] and api["total"] == 6 and api["pages"] == 3


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("stage=live", "unknown stage 'live'"),
        ("state=fine", "unknown monitoring state 'fine'"),
        ("page=0", "page 0"),
        ("per_page=1000", "per_page 1000"),
        ("page=two", "page"),
    ],
)
def test_a_bad_filter_is_a_clear_400_on_the_page_and_the_api(
    client: TestClient, query: str, says: str
) -> None:
    sign_in(client, "vic")
    page = client.get(f"/?{query}")
    assert page.status_code == 400 and "Traceback" not in page.text
    assert says in html.unescape(page.text)
    api = client.get(f"/api/pipelines?{query}")
    assert api.status_code == 400 and says in api.json()["message"]


def test_the_catalogue_needs_a_signed_in_user(client: TestClient) -> None:
    assert client.get("/").status_code == 303
    assert client.get("/api/pipelines").status_code == 401


def test_each_row_shows_the_pipelines_monthly_cost(client: TestClient) -> None:
    with _metadata(client).unit_of_work() as uow:
        for name in ("costly", "free"):
            uow.pipelines.upsert(name, "olga", "", "k")
        config = "resources: {cpus: 2, memory: 4GiB}\n"
        run = uow.runs.create("costly", "manual", config, "c" * 64, "kiln.yaml", "host", 1)
        uow.steps.start(run.id, "train")
        uow.steps.finish(run.id, "train", "succeeded", wall_seconds=3600.0,
                         cpu_seconds=3600.0, peak_memory_bytes=1 << 30)  # fmt: skip
        uow.runs.mark_finished(run.id, "succeeded")
        uow.runs.update(run.id, started_at=run.started_at - timedelta(hours=1))
    sign_in(client, "vic")
    rows = {r["pipeline"]: r for r in client.get("/api/pipelines").json()["rows"]}
    assert rows["costly"]["monthly_usd"] > 0 and not rows["free"]["monthly_usd"]
    page = client.get("/").text
    costly = page[page.index('data-pipeline="costly"') :].split("</tr>")[0]
    assert re.search(r'class="num cost"><a href="/pipelines/costly/cost">\$\d', costly)
