"""Canary routing on a real server: the canary answers its share of the requests (sticky per
client request id, on any worker), its answers are captured as stage canary and never copied
to the shadows, a tampered canary is refused while production serves, and taking the canary
away (shadow it, or promote it) is picked up on reload."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import (
    PIPELINE,
    Server,
    Trained,
    register_copy,
    set_canary,
    set_stage,
    tamper,
    wait_for,
)

from kiln.settings import Settings
from kiln.stores import read_captures

pytestmark = pytest.mark.slow


def _within_binomial(hits: int, n: int, p: float, sigmas: float = 6.0) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def _predict_url(server: Server) -> str:
    return f"{server.url}/v1/pipelines/{PIPELINE}/predict"


def test_the_canary_answers_its_share_and_is_captured_as_canary_without_shadow(
    trained: Trained, serve, tmp_path: Path, flight_rows: list[dict[str, Any]]
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 1, "production")  # captures 50%
    set_canary(home, 2, 0.5)  # captures 100%
    shadow = register_copy(home, 2)
    set_stage(home, shadow, "shadow")
    server = serve(home, workers=2)
    server.wait_ready()

    detail = httpx.get(f"{server.url}/v1/pipelines/{PIPELINE}").json()
    assert detail["production"]["version"] == 1
    assert detail["canary"]["version"] == 2 and detail["canary_share"] == 0.5
    assert detail["registry_canary"] == 2
    assert [s["version"] for s in detail["shadows"]] == [shadow]
    (summary,) = httpx.get(f"{server.url}/v1/pipelines").json()
    assert (summary["canary"], summary["canary_share"]) == (2, 0.5)

    answered: dict[str, int] = {}
    captured: set[str] = set()
    with httpx.Client(timeout=30) as client:
        for i in range(400):  # no X-Request-ID: the split is random
            r = client.post(_predict_url(server), json={"features": flight_rows[i]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert r.headers["x-kiln-version"] == str(body["version"])
            answered[body["request_id"]] = body["version"]
            if r.headers["x-kiln-captured"] == "1":
                captured.add(body["request_id"])
    by_version = Counter(answered.values())
    assert set(by_version) == {1, 2}
    assert _within_binomial(by_version[2], 400, 0.5), by_version
    canary_ids = {rid for rid, v in answered.items() if v == 2}
    assert canary_ids <= captured  # the canary's sample rate is 1.0

    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'kiln_predicted_rows_total{{pipeline="{PIPELINE}",stage="canary",version="2"}}' in (
        metrics
    )
    assert server.stop() == 0
    root = Settings(home=home).artifact_root
    canary = read_captures(root, PIPELINE, stage="canary").to_pylist()
    assert {c["request_id"] for c in canary} == canary_ids
    assert {c["version"] for c in canary} == {2}
    assert all(c["prediction"] is not None and c["error"] is None for c in canary)
    production = read_captures(root, PIPELINE, stage="production").to_pylist()
    production_ids = {c["request_id"] for c in production}
    assert production_ids == captured - canary_ids
    assert {c["version"] for c in production} == {1}
    shadows = read_captures(root, PIPELINE, stage="shadow").to_pylist()
    assert {c["request_id"] for c in shadows} == production_ids  # never the canary's requests
    assert {c["version"] for c in shadows} == {shadow}


def test_the_split_is_sticky_per_request_id_and_a_removed_canary_stops_answering(
    trained: Trained, serve, tmp_path: Path, flight_rows: list[dict[str, Any]]
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 1, "production")
    set_canary(home, 2, 0.5)
    server = serve(home, workers=2)
    server.wait_ready()
    url = _predict_url(server)
    detail_url = f"{server.url}/v1/pipelines/{PIPELINE}"
    row = {"features": flight_rows[0]}
    with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as fresh:

        def version_of(rid: str) -> int:
            r = fresh.post(url, json=row, headers={"X-Request-ID": rid})  # a new connection each
            assert r.status_code == 200, r.text
            assert r.json()["request_id"] == rid
            return int(r.json()["version"])

        # on new connections, so that both workers answer: the hash is the same in every process
        seen = {f"client-{i}": {version_of(f"client-{i}") for _ in range(4)} for i in range(60)}
        assert all(len(versions) == 1 for versions in seen.values()), seen
        sticky = {rid: versions.pop() for rid, versions in seen.items()}
        assert _within_binomial(sum(v == 2 for v in sticky.values()), 60, 0.5)
        to_canary = [rid for rid, v in sticky.items() if v == 2]
        assert to_canary and len(to_canary) < 60

        def detail_when(answering: int, ids: list[str]) -> dict[str, Any] | None:
            """The pipeline's detail, once ``answering`` answers every one of ``ids``."""
            detail: dict[str, Any] = fresh.get(detail_url).json()
            return detail if all(version_of(rid) == answering for rid in ids) else None

        set_stage(home, 2, "shadow")  # no canary any more: production answers everything
        detail = wait_for(
            lambda: (d := detail_when(1, to_canary)) and d["canary"] is None and d,
            what="the canary to stop answering",
        )
        assert detail["canary_share"] is None and detail["registry_canary"] is None
        assert detail["registry_shadows"] == [2]

        set_canary(home, 2, 0.5)
        wait_for(lambda: detail_when(2, to_canary), what="the canary to answer again")
        set_stage(home, 2, "production")  # promoted: the canary is production now
        detail = wait_for(
            lambda: (d := detail_when(2, list(sticky))) and d["canary"] is None and d,
            what="v2 to answer everything",
        )
        assert detail["production"]["version"] == 2 and detail["registry_canary"] is None


def test_a_tampered_canary_is_refused_while_production_serves(
    trained: Trained, serve, tmp_path: Path, flight_rows: list[dict[str, Any]]
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 1, "production")
    artifact = tamper(home, 2)
    set_canary(home, 2, 0.5)
    server = serve(home)
    server.wait_ready()  # a refused canary does not make the server unready

    detail_url = f"{server.url}/v1/pipelines/{PIPELINE}"
    detail = wait_for(
        lambda: (d := httpx.get(detail_url).json())["last_reload_error"] and d,
        what="the refusal of the canary",
    )
    assert detail["last_reload_error"]["version"] == 2
    assert artifact in detail["last_reload_error"]["message"]
    assert detail["canary"] is None and detail["registry_canary"] == 2
    assert detail["production"]["version"] == 1
    with httpx.Client(timeout=30) as client:
        answers = [
            client.post(_predict_url(server), json={"features": row}) for row in flight_rows[:60]
        ]
    assert {r.status_code for r in answers} == {200}
    assert {r.json()["version"] for r in answers} == {1}
    server.stop()
    assert server.log().count("refused flights-serve v2") == 1
