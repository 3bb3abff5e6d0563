"""The run page and its API over a registry of two real runs on the real flights: the second
run's JFK task failed for real (tests/ui/_version_home.py)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from kiln.registry.queries.run import (
    LOG_CHARS,
    TIMELINE_MAX,
    Span,
    _timeline,
    run_detail,
    task_log,
)
from kiln.settings import Settings
from kiln.stores import MetadataStore, Stores
from tests.ui._version_home import BROKEN, LOG_MARK, PIPELINE, SCRIPT, copy_home, version_home
from tests.ui.conftest import sign_in

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, warehouse: Path) -> Settings:
    """The test's own copy of the two-run registry."""
    template = version_home(tmp_path_factory.mktemp("version-home"), warehouse)
    return Settings(home=copy_home(template, tmp_path / ".kiln"))


def run_of(stores: Stores, version: int) -> str:
    with stores.metadata.read() as uow:
        return uow.versions.get(PIPELINE, version).run_id


def section(page: str, name: str) -> str:
    found = re.search(rf'<section id="{name}".*?</section>', page, re.S)
    assert found, f"no section#{name}"
    return found.group(0)


def test_run_page_steps_tasks_and_failed_segment(client: TestClient, stores: Stores) -> None:
    sign_in(client, "vic")
    run_id = run_of(stores, 2)
    r = client.get(f"/runs/{run_id}")
    assert r.status_code == 200, r.text
    page = r.text
    steps = section(page, "steps")
    for step in ("extract", "check", "train", "register"):
        assert f'data-step="{step}"' in steps
    tasks = section(page, "tasks")
    rows = re.findall(r'<tr data-segment="([^"]+)" data-status="([a-z]+)">', tasks)
    assert rows[0] == (BROKEN, "failed")  # failed first
    assert {s for s, _ in rows} == {"EWR", "JFK", "LGA", "(fallback)"}
    assert sum(1 for _, status in rows if status == "succeeded") == 3
    failed = section(page, "failed")
    assert f'data-segment="{BROKEN}"' in failed and "data is broken today" in failed
    # run -> version
    assert f'href="/pipelines/{PIPELINE}/versions/2"' in page


def test_fanout_chart_has_one_bar_per_task(client: TestClient, stores: Stores) -> None:
    sign_in(client, "vic")
    page = client.get(f"/runs/{run_of(stores, 2)}").text
    fanout = section(page, "fanout")
    data = re.search(
        r'<script type="application/json" id="fanout-figure">(.*?)</script>', fanout, re.S
    )
    assert data
    figure = json.loads(data.group(1))
    bars = {t["name"]: t for t in figure["data"]}
    assert set(bars) == {"failed", "succeeded"}
    assert bars["failed"]["y"] == [BROKEN]
    assert sorted(bars["succeeded"]["y"]) == ["(fallback)", "EWR", "LGA"]
    for trace in figure["data"]:
        assert trace["type"] == "bar" and trace["orientation"] == "h"
        assert all(x > 0 for x in trace["x"])
        assert all(datetime.fromisoformat(b).tzinfo is not None for b in trace["base"])
    assert figure["layout"]["xaxis"]["type"] == "date"
    assert '<script src="/static/plotly.min.js">' in page


def test_logs_are_escaped(client: TestClient, stores: Stores) -> None:
    sign_in(client, "vic")
    page = client.get(f"/runs/{run_of(stores, 2)}").text
    logs = section(page, "logs")
    assert str(escape(LOG_MARK)) in logs and LOG_MARK not in page
    assert SCRIPT not in page and str(escape(SCRIPT)) in page
    assert f"/api/runs/{run_of(stores, 2)}/logs?segment={BROKEN}" in logs


def test_api_run_and_full_log(client: TestClient, stores: Stores) -> None:
    sign_in(client, "vic")
    run_id = run_of(stores, 2)
    body = client.get(f"/api/runs/{run_id}").json()
    assert body["status"] == "succeeded" and body["trigger"] == "manual"
    assert body["version"] == {
        "version": 2, "stage": "blocked", "url": f"/api/pipelines/{PIPELINE}/versions/2"
    }  # fmt: skip
    assert body["task_counts"] == {"failed": 1, "succeeded": 3} and body["tasks_total"] == 4
    assert body["failed_segments"] == [BROKEN]
    first = body["tasks"][0]
    assert first["segment"] == BROKEN and SCRIPT in first["error"]
    ok = [t for t in body["tasks"] if t["status"] == "succeeded"]
    assert ok[0]["wall_seconds"] >= ok[1]["wall_seconds"]  # then the slowest
    assert all(t["peak_memory_bytes"] > 0 and t["cpu_seconds"] >= 0 for t in body["tasks"])
    assert len(body["timeline"]["spans"]) == 4 and not body["timeline"]["sampled"]
    assert {s["name"] for s in body["steps"]} >= {"extract", "train", "register", "release"}
    one = client.get(f"/api/runs/{run_id}?limit=1").json()
    assert [t["segment"] for t in one["tasks"]] == [BROKEN] and one["tasks_total"] == 4
    log = client.get(first["log_url"])
    assert log.status_code == 200 and LOG_MARK in log.text
    assert log.headers["content-type"].startswith("text/plain")


def test_unknown_run_segment_and_bad_limit(client: TestClient, stores: Stores) -> None:
    sign_in(client, "vic")
    page = client.get("/runs/no-such-run")
    assert page.status_code == 404 and 'data-status="404"' in page.text
    assert client.get("/api/runs/no-such-run").status_code == 404
    run_id = run_of(stores, 1)
    assert client.get(f"/api/runs/{run_id}/logs?segment=XYZ").status_code == 404
    assert client.get(f"/api/runs/{run_id}/logs").status_code == 400
    assert client.get(f"/api/runs/{run_id}?limit=0").status_code == 400
    assert client.get(f"/runs/{run_id}?limit=abc").status_code == 400


def test_timeline_keeps_every_failed_task_and_samples_the_rest() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    spans = [
        (f"s{i}", "failed" if i % 1000 == 0 else "succeeded",
         start + timedelta(seconds=i), start + timedelta(seconds=i + 2))
        for i in range(10_000)
    ]  # fmt: skip
    timeline = _timeline(spans)
    assert timeline.total == 10_000 and timeline.sampled
    assert len(timeline.spans) == TIMELINE_MAX
    assert sum(s.status == "failed" for s in timeline.spans) == 10
    starts = [s.started_at for s in timeline.spans]
    assert starts == sorted(starts) and isinstance(timeline.spans[0], Span)
    assert timeline.spans[-1].started_at > start + timedelta(seconds=9_000)  # spread over all
    assert LOG_CHARS > 0


def test_bounded_task_reads_on_each_backend(store: MetadataStore) -> None:
    """The store's page (failed first, then slowest), counts and sampled spans of a run."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with store.unit_of_work() as uow:
        uow.pipelines.upsert("p", "olga", "", "kiln.yaml")
        run = uow.runs.create("p", "manual", "name: p", "0" * 64, "kiln.yaml", "h", 1)
        for i in range(30):
            uow.tasks.record(
                run.id, f"s{i:02d}", status="failed" if i in (3, 17) else "succeeded",
                started_at=start + timedelta(seconds=i),
                finished_at=start + timedelta(seconds=i + 1),
                wall_seconds=float(i % 7), cpu_seconds=0.5, peak_memory_bytes=10, rows_train=1,
                rows_holdout=1, metrics={}, artifact_digest=None, error=None,
                log="start\n" + "x" * LOG_CHARS + "\nthe end" if i == 3 else "",
            )  # fmt: skip
    with store.read() as uow:
        page = uow.tasks.page(run.id, limit=5)
        counts = uow.tasks.counts(run.id)
        spans = uow.tasks.spans(run.id, most=10)
        every = uow.tasks.spans(run.id)
    assert [t.segment for t in page[:2]] == ["s03", "s17"]
    assert [t.wall_seconds for t in page[2:]] == [6.0, 6.0, 6.0]
    assert counts == {"failed": 2, "succeeded": 28}
    assert len(every) == 30 and [s[0] for s in every] == sorted(s[0] for s in every)
    assert 10 <= len(spans) <= 20 and {"s03", "s17"} <= {s[0] for s in spans}
    assert [s[2] for s in spans] == sorted(s[2] for s in spans)
    detail = run_detail(store, run.id, limit=3)
    long = detail.tasks[0]
    assert long.segment == "s03" and long.log_truncated and long.log.endswith("the end")
    assert len(long.log) == LOG_CHARS and long.log_chars == LOG_CHARS + 14
    assert detail.task_total == 30 and detail.failed_total == 2 and len(detail.tasks) == 3
    assert task_log(store, run.id, "s03").log.startswith("start")
