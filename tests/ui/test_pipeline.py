"""The page of one pipeline and its API over real stores, and `kiln ui` as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from kiln.registry.queries.pipeline import pipeline_view
from kiln.registry.stages import Stages
from kiln.settings import Settings
from kiln.stores import ContentStore, MetadataStore, Stores, open_stores
from kiln.stores.artifacts import FsspecArtifactStore
from tests.conftest import ROOT
from tests.ui._pipelines import PIPELINE, register
from tests.ui.conftest import sign_in

ACTION_FORM = re.compile(r'<form[^>]*action="/pipelines/[^"]*/actions/([a-z]+)"')


def _figure(html: str, figure_id: str) -> dict:  # type: ignore[type-arg]
    found = re.search(
        rf'<script type="application/json" id="{figure_id}">(.*?)</script>', html, re.S
    )
    assert found, f"no figure {figure_id}"
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def test_the_page_shows_versions_deployments_metric_alerts_and_audit(
    client: TestClient, stores: Stores
) -> None:
    v1, v2, v3 = register(stores, 3)
    stages = Stages(stores.metadata)
    stages.promote(PIPELINE, v1, actor="ada", reason="first")
    stages.block(PIPELINE, v3, actor="gates", reason="replay failed")
    stages.set_shadow(PIPELINE, v2, actor="olga")
    sign_in(client, "olga")
    r = client.get(f"/pipelines/{PIPELINE}")
    assert r.status_code == 200
    html = r.text
    for version, stage in ((v1, "production"), (v2, "shadow"), (v3, "blocked")):
        assert f'data-version="{version}" data-stage="{stage}"' in html
        assert f'href="/pipelines/{PIPELINE}/versions/{version}"' in html
    assert 'section id="deployments"' in html and 'section id="metric-chart"' in html
    assert '<table id="audit">' in html
    audit_row = (
        r'<tr data-action="block">\s*<td[^>]*>[^<]*</td>\s*<td class="actor wrap">gates</td>'
        r'.*?<td class="reason wrap">replay failed</td>'
    )
    assert re.search(audit_row, html, re.S)
    timeline = _figure(html, "versions-timeline")
    assert {t["name"] for t in timeline["data"]} == {"production", "shadow", "blocked"}
    metric = _figure(html, "segment-metric")
    by_segment = {t["name"]: t for t in metric["data"]}
    assert set(by_segment) == {"EWR", "JFK", "LGA"}
    assert by_segment["EWR"]["x"] == [v1, v2, v3]
    assert by_segment["EWR"]["y"] == [10.0, 11.0, 12.0]
    assert by_segment["LGA"]["text"] == ["fallback"] * 3
    # the owner's buttons: promote the shadow, override the blocked one, roll back, run
    forms = set(ACTION_FORM.findall(html))
    assert {"promote", "unshadow", "override", "block", "rollback", "run"} <= forms
    assert re.search(r'actions/override".*?<textarea name="reason" required', html, re.S)


def test_a_viewer_and_another_owner_see_no_action_forms(client: TestClient, stores: Stores) -> None:
    register(stores, 2)
    register(stores, 1, pipeline="other-pipe", owner="someone")
    sign_in(client, "vic")
    page = client.get(f"/pipelines/{PIPELINE}").text
    assert "data-version" in page and not ACTION_FORM.search(page)
    client.cookies.clear()
    sign_in(client, "olga")
    assert not ACTION_FORM.search(client.get("/pipelines/other-pipe").text)
    assert ACTION_FORM.search(client.get(f"/pipelines/{PIPELINE}").text)


def test_html_in_a_description_and_a_reason_is_shown_escaped(
    client: TestClient, stores: Stores
) -> None:
    [v1] = register(stores, 1, description='<script>alert("d")</script>')
    Stages(stores.metadata).block(PIPELINE, v1, actor="gates", reason="<b onclick=x>bold</b>")
    sign_in(client, "olga")
    html = client.get(f"/pipelines/{PIPELINE}").text
    assert '<script>alert("d")</script>' not in html
    assert "&lt;script&gt;alert(&#34;d&#34;)&lt;/script&gt;" in html
    assert "<b onclick=x>" not in html and "&lt;b onclick=x&gt;bold&lt;/b&gt;" in html


def test_a_3000_char_reason_renders_in_a_wrapping_cell(client: TestClient, stores: Stores) -> None:
    [v1] = register(stores, 1)
    reason = "why " * 750
    Stages(stores.metadata).block(PIPELINE, v1, actor="gates", reason=reason)
    sign_in(client, "olga")
    html = client.get(f"/pipelines/{PIPELINE}").text
    assert f'<td class="reason wrap">{reason}</td>' in html
    css = client.get("/static/kiln.css").text
    assert re.search(r"td\.reason[^{]*\{[^}]*overflow-wrap:\s*anywhere", css)


def test_an_unknown_pipeline_is_a_404_page_and_a_404_json(client: TestClient) -> None:
    sign_in(client, "vic")
    page = client.get("/pipelines/no-such-pipe")
    assert page.status_code == 404 and "<html" in page.text and "no-such-pipe" in page.text
    api = client.get("/api/pipelines/no-such-pipe")
    assert api.status_code == 404 and api.json()["error"] == "not_found"
    assert client.get("/api/pipelines/no-such-pipe/audit").status_code == 404


def test_the_api_gives_the_pipeline_and_its_audit_log(client: TestClient, stores: Stores) -> None:
    v1, v2 = register(stores, 2)
    Stages(stores.metadata).promote(PIPELINE, v2, actor="ada", reason="better")
    sign_in(client, "vic")
    body = client.get(f"/api/pipelines/{PIPELINE}").json()
    assert body["owner"] == "olga" and body["production"] == v2 and body["may_change"] is False
    assert [v["version"] for v in body["versions"]] == [v2, v1]
    assert body["versions"][0]["headline"] == 12.0 and body["primary"] == "mae"
    assert body["segments_from_manifests"] == 2 and len(body["segments"]) == 6
    assert body["deployments"][0]["actor"] == "ada"
    audit = client.get(f"/api/pipelines/{PIPELINE}/audit", params={"limit": 1}).json()
    assert [(e["actor"], e["action"], e["reason"]) for e in audit] == [("ada", "promote", "better")]
    assert client.get(f"/api/pipelines/{PIPELINE}/audit", params={"limit": 0}).status_code == 400
    openapi = client.get("/api/openapi.json").json()
    spec = openapi["paths"]
    assert "/api/pipelines/{name}" in spec and "/api/pipelines/{name}/{action}" in spec
    assert "/api/alerts/{alert_id}/ack" in spec
    schemas = openapi["components"]["schemas"]  # the query dataclasses, with their fields
    assert {"version", "stage", "headline", "traffic_share"} <= set(
        schemas["PipelineVersion"]["properties"]
    )
    assert {"segment", "value", "fallback"} <= set(schemas["SegmentPoint"]["properties"])
    assert {"actor", "action", "reason", "details"} <= set(schemas["AuditRecord"]["properties"])
    assert {"from_version", "actor", "at"} <= set(schemas["DeploymentRecord"]["properties"])
    assert {"changed", "message", "stage", "run_id"} <= set(schemas["Outcome"]["properties"])


def test_the_page_lists_at_most_the_newest_200_versions(client: TestClient, stores: Stores) -> None:
    register(stores, 203)
    sign_in(client, "vic")
    html = client.get(f"/pipelines/{PIPELINE}").text
    assert html.count('data-stage="candidate"') == 200
    assert 'data-version="203"' in html and 'data-version="3"' not in html
    assert "the newest 200 of 203 versions" in html


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_kiln_ui_starts_answers_login_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILN_HOME": str(tmp_path / ".kiln")}
    open_stores(Settings(home=tmp_path / ".kiln"), upgrade=True).close()
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "ui", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "kiln ui did not answer within 60 s"
                time.sleep(0.2)
        assert r.status_code == 200 and 'name="secret"' in r.text
        busy = subprocess.run(
            [sys.executable, "-m", "kiln.cli", "ui", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert busy.returncode != 0 and f"port {port}" in busy.stderr and "in use" in busy.stderr
        process.send_signal(signal.SIGTERM)
        out, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, errors
    assert "no user exists yet" in errors and "kiln users add" in errors
    assert f":{port}/" in out


def test_the_pipeline_query_on_every_backend(store: MetadataStore, tmp_path: Path) -> None:
    """SQLite and PostgreSQL: the column read of the versions (experiment from the lineage's
    JSON), the latest run, the audit log, the per-segment metric from the manifests."""
    stores = Stores(store, ContentStore(FsspecArtifactStore(str(tmp_path / "artifacts"))))
    v1, v2 = register(stores, 2)
    with store.unit_of_work() as uow:
        run = uow.runs.create(PIPELINE, "manual", "", "c" * 64, "kiln.yaml", "host", 1)
        v3 = uow.versions.register(PIPELINE, run.id, "f" * 64, {}, {"experiment": "wider"}).version
    Stages(store).promote(PIPELINE, v1, actor="ada", reason="first")
    view = pipeline_view(store, stores.content, PIPELINE)
    assert [(v.version, v.stage, v.experiment) for v in view.versions] == [
        (v3, "candidate", "wider"), (v2, "candidate", None), (v1, "production", None),
    ]  # fmt: skip
    assert view.versions[0].created_at.tzinfo is not None
    assert view.production == v1 and view.version_count == 3
    assert view.latest_run is not None and view.latest_run.id == run.id
    assert view.resumable_run == run.id  # recorded running, its process gone: interrupted
    assert [(e.actor, e.action) for e in view.audit] == [("ada", "promote")]
    assert view.primary == "mae" and view.manifests_read == 3
    assert len(view.segments) == 6 and view.manifest_errors[0].startswith(f"v{v3}: ")


def test_after_an_action_the_page_shows_the_flash_the_audit_row_and_a_resume_button(
    client: TestClient, stores: Stores
) -> None:
    [v1] = register(stores, 1)
    with stores.metadata.unit_of_work() as uow:
        failed = uow.runs.create(PIPELINE, "manual", "", "c" * 64, "kiln.yaml", "host", 1)
        uow.runs.mark_finished(failed.id, "failed", error="training failed")
    csrf = sign_in(client, "olga")
    form = {"csrf_token": csrf, "version": str(v1), "reason": "<i>ready</i>"}
    done = client.post(f"/pipelines/{PIPELINE}/actions/promote", data=form)
    assert done.status_code == 303
    page = client.get(done.headers["location"]).text
    assert re.search(r'<p class="flash ok"[^>]*>[^<]*v1 -&gt; production', page)
    row = (
        r'<tr data-action="promote">.*?<td class="actor wrap">olga</td>'
        r'.*?<td class="reason wrap">&lt;i&gt;ready&lt;/i&gt;</td>'
    )
    assert re.search(row, page, re.S)
    assert f'name="run_id" value="{failed.id}"' in page
    assert "resume" in ACTION_FORM.findall(page)
    assert "flash" not in client.get(f"/pipelines/{PIPELINE}").text  # shown once
