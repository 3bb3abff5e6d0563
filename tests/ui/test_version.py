"""The version page and its API over a registry of two real runs on the real flights: a blocked
version with its real gate evidence (tests/ui/_version_home.py)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from kiln.settings import Settings
from kiln.ui.api.version import finite
from tests.ui._version_home import (
    BROKEN,
    PIPELINE,
    REQUEST_PREFIX,
    SCRIPT,
    copy_home,
    version_home,
)
from tests.ui.conftest import sign_in

pytestmark = pytest.mark.slow

PAGE = f"/pipelines/{PIPELINE}/versions"


@pytest.fixture
def settings(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, warehouse: Path) -> Settings:
    """The test's own copy of the two-run registry."""
    template = version_home(tmp_path_factory.mktemp("version-home"), warehouse)
    return Settings(home=copy_home(template, tmp_path / ".kiln"))


def section(page: str, name: str) -> str:
    found = re.search(rf'<section id="{name}".*?</section>', page, re.S)
    assert found, f"no section#{name}"
    return found.group(0)


def gate_block(page: str, gate: str) -> str:
    found = re.search(rf'<article[^>]*data-gate="{gate}"[^>]*>.*?</article>', page, re.S)
    assert found, f"no gate {gate}"
    return found.group(0)


def test_blocked_version_shows_the_failed_gates_evidence_first(client: TestClient) -> None:
    sign_in(client, "vic")
    r = client.get(f"{PAGE}/2")
    assert r.status_code == 200, r.text
    page = r.text
    assert 'data-stage="blocked"' in page
    gates = section(page, "gates")
    statuses = dict(re.findall(r'data-gate="([a-z_]+)" data-status="([a-z]+)"', gates))
    assert statuses["champion_challenger"] == "failed"
    assert statuses["replay"] == "failed"
    assert statuses["feature_availability"] == "failed"
    # failed gates come first
    first = re.search(r'data-gate="[a-z_]+" data-status="([a-z]+)"', gates)
    assert first and first.group(1) == "failed"
    # the segment the candidate lost, with the training error that lost it
    champion = gate_block(page, "champion_challenger")
    segments = re.search(r'<div class="failing-segments">.*?</div>', champion, re.S)
    assert segments and f'data-segment="{BROKEN}"' in segments.group(0)
    assert "lost: routed to the fallback: training failed" in segments.group(0)
    # the requests that replay and feature availability name, from the real captures
    for gate in ("replay", "feature_availability"):
        block = gate_block(page, gate)
        requests = re.search(r'<div class="failing-requests">.*?</div>', block, re.S)
        assert requests, gate
        assert html.escape(REQUEST_PREFIX) + "-0" in requests.group(0)
        assert "dep_delay" in requests.group(0)
    # data quality: the segment left wholly to the fallback
    quality = gate_block(page, "data_quality")
    found = rf'failing-segments.*data-segment="{BROKEN}".*100% of its holdout'
    assert re.search(found, quality, re.S)
    # the whole evidence is there as JSON too
    assert '"lost_segments"' in champion.replace("&#34;", '"').replace("&quot;", '"')


def test_data_from_the_registry_is_escaped(client: TestClient) -> None:
    sign_in(client, "vic")
    page = client.get(f"{PAGE}/2").text
    assert SCRIPT not in page and REQUEST_PREFIX not in page
    assert str(escape(SCRIPT)) in page
    assert "&lt;i&gt;req&lt;/i&gt;-0" in page


@pytest.mark.parametrize("user", ["ada", "olga"])
def test_override_form_for_admin_and_owner(client: TestClient, user: str) -> None:
    csrf = sign_in(client, user)
    page = client.get(f"{PAGE}/2").text
    form = re.search(
        rf'<form method="post" action="/pipelines/{PIPELINE}/actions/override".*?</form>',
        page,
        re.S,
    )
    assert form, "no override form"
    text = form.group(0)
    assert re.search(r'<textarea name="reason" required', text)
    assert f'name="csrf_token" value="{csrf}"' in text
    assert 'name="version" value="2"' in text
    assert f'name="back" value="{PAGE}/2"' in text
    assert 'button type="submit"' in text
    # the decision comes after the evidence
    assert page.index('id="gates"') < page.index("/actions/override")
    # a blocked version can only be overridden: no promote or shadow button
    assert "/actions/promote" not in page and "/actions/shadow" not in page


def test_viewer_gets_no_action_form(client: TestClient) -> None:
    sign_in(client, "vic")
    for n in (1, 2):
        page = client.get(f"{PAGE}/{n}").text
        assert "/actions/" not in page
        assert "<form" in page  # sign-out form only
        assert len(re.findall(r"<form", page)) == 1


def test_production_version_offers_no_stage_action_but_links_its_run(client: TestClient) -> None:
    sign_in(client, "ada")
    page = client.get(f"{PAGE}/v1").text
    assert 'data-stage="production"' in page
    assert "/actions/" not in page
    run = re.search(r'<a class="run-link" href="(/runs/[^"]+)"', page)
    assert run
    back = client.get(run.group(1))
    assert back.status_code == 200
    assert f'href="{PAGE}/1"' in back.text  # run -> version


def test_segments_lineage_and_champion(client: TestClient) -> None:
    sign_in(client, "vic")
    page = client.get(f"{PAGE}/2").text
    segments = section(page, "segments")
    assert f'data-segment="{BROKEN}" data-model="fallback"' in segments
    assert 'data-segment="EWR" data-model="own"' in segments
    assert 'data-segment="(fallback)"' in segments
    assert "mae* (fallback)" in segments
    lineage = section(page, "lineage")
    assert "+- dep_delay" in lineage  # the config diff against v1
    assert "badtrain:train" in lineage
    assert "lightgbm" in lineage
    champion = section(page, "champion")
    assert f'href="{PAGE}/1"' in champion
    assert "judged against it by its gates" in champion
    assert 'data-segment="EWR"' in champion and 'data-segment="(overall)"' in champion


def test_api_version(client: TestClient) -> None:
    sign_in(client, "vic")
    r = client.get(f"/api{PAGE}/2")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stage"] == "blocked" and body["owner"] == "olga"
    gates = {g["gate"]: g for g in body["gates"]}
    champion = gates["champion_challenger"]
    assert champion["status"] == "failed"
    assert [s["segment"] for s in champion["failing_segments"]] == [BROKEN]
    assert champion["evidence"]["lost_segments"][BROKEN]["reason"].endswith(SCRIPT)
    replay = gates["replay"]
    assert replay["failing_requests"][0]["request_id"].startswith(REQUEST_PREFIX)
    assert len(replay["failing_requests"]) == len(replay["evidence"]["failures"])
    assert body["champion"]["version"] == 1
    assert body["lineage"]["previous_version"] == 1
    assert any("dep_delay" in line for line in body["lineage"]["config_diff"])
    assert body["run"]["url"] == f"/api/runs/{body['run']['id']}"


@pytest.mark.parametrize(
    "ref", ["3", "0", "abc", "1.5", "-1", "99999999999999999999999", "v2x", "%3Cscript%3E"]
)
def test_unknown_or_bad_version_is_a_404_page(client: TestClient, ref: str) -> None:
    sign_in(client, "vic")
    page = client.get(f"{PAGE}/{ref}")
    assert page.status_code == 404, page.text
    assert 'data-status="404"' in page.text and "<script>" not in page.text
    api = client.get(f"/api{PAGE}/{ref}")
    assert api.status_code == 404 and api.json()["error"] == "not_found"


def test_unknown_pipeline_is_a_404(client: TestClient) -> None:
    sign_in(client, "vic")
    assert client.get("/pipelines/nope/versions/1").status_code == 404
    assert client.get("/api/pipelines/nope/versions/1").status_code == 404


def test_signed_out_is_sent_to_sign_in(client: TestClient) -> None:
    r = client.get(f"{PAGE}/2")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get(f"/api{PAGE}/2").status_code == 401


def test_api_answers_undefined_metrics_as_null() -> None:
    nan, inf = float("nan"), float("inf")
    assert finite({"a": [1.0, nan, {"b": inf}], "c": (2, "x")}) == {
        "a": [1.0, None, {"b": None}],
        "c": [2, "x"],
    }
