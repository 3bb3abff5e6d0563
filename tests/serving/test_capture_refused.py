"""Refused requests are captured on a real server: one record per request, with the version
that refused it (production or canary), no prediction and the error, so that the live error
rate of a version (``kiln.monitoring.live``) counts them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from serving_support import PIPELINE, Trained, register_copy, set_canary, set_stage

from kiln.monitoring.live import live_stats
from kiln.serving import MAX_INSTANCES
from kiln.settings import Settings
from kiln.stores import query_captures, read_captures

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Sent:
    status: int
    code: str
    features: dict[str, Any]
    version: int
    captured: bool


def test_refused_requests_are_captured_as_errors_of_the_version_that_refused_them(
    trained: Trained, serve, tmp_path: Path, flight_rows: list[dict[str, Any]]
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 2, "production")  # captures 100%
    canary = register_copy(home, 2)  # captures 100% too
    set_canary(home, canary, 0.5)
    server = serve(home)
    server.wait_ready()
    url = f"{server.url}/v1/pipelines/{PIPELINE}/predict"

    missing = [{k: v for k, v in row.items() if k != "temp"} for row in flight_rows[:40]]
    unknown = {**flight_rows[0], **{f"colour_{i}_{'x' * 40}": 1 for i in range(8)}}
    bodies: list[tuple[bytes, str, int, str, dict[str, Any]]] = [
        (orjson.dumps({"features": row}), "application/json", 422, "invalid_input", row)
        for row in missing
    ]
    bodies += [
        (orjson.dumps({"features": unknown}), "application/json", 422, "invalid_input", unknown),
        (
            orjson.dumps({"instances": [missing[0], flight_rows[1]]}),
            "application/json", 422, "invalid_input", missing[0],
        ),
        (b'{"features": {', "application/json", 400, "invalid_json", {}),
        (b'{"features": "origin=JFK"}', "application/json", 422, "invalid_input", {}),
        (
            orjson.dumps({"features": flight_rows[2]}),
            "text/plain", 415, "unsupported_media_type", flight_rows[2],
        ),
        (
            orjson.dumps({"instances": [flight_rows[3]] * (MAX_INSTANCES + 1)}),
            "application/json", 413, "too_many_instances", flight_rows[3],
        ),
    ]  # fmt: skip

    sent: dict[str, Sent] = {}
    answered: dict[str, int] = {}
    with httpx.Client(timeout=30) as client:
        for i, (body, content_type, status, code, features) in enumerate(bodies):
            rid = f"bad-{i}"
            headers = {"Content-Type": content_type, "X-Request-ID": rid}
            r = client.post(url, content=body, headers=headers)
            assert r.status_code == status, r.text
            assert r.json()["error"]["code"] == code
            version = int(r.headers["x-kiln-version"])
            sent[rid] = Sent(status, code, features, version, r.headers["x-kiln-captured"] == "1")
        for i, row in enumerate(flight_rows[100:160]):
            r = client.post(url, json={"features": row}, headers={"X-Request-ID": f"ok-{i}"})
            assert r.status_code == 200
            if r.headers["x-kiln-captured"] == "1":
                answered[f"ok-{i}"] = r.json()["version"]
        unknown_pipeline = client.post(
            f"{server.url}/v1/pipelines/nope/predict", json={"features": flight_rows[0]}
        )
        assert unknown_pipeline.headers["x-kiln-captured"] == "0"  # no version was chosen

    versions = (2, canary)
    by_version = {v: [rid for rid, s in sent.items() if s.version == v] for v in versions}
    assert by_version[2] and by_version[canary], "both versions refused some requests"
    assert all(s.captured for s in sent.values())  # both capture 100%
    server.stop()  # flushes the captures (one worker exits by the re-raised SIGTERM)
    assert "captures:" in server.log()

    captures = read_captures(Settings(home=home).artifact_root, PIPELINE, stage=None)
    records = {c["request_id"]: c for c in captures.to_pylist()}
    refused = {rid: c for rid, c in records.items() if rid.startswith("bad-")}
    assert set(refused) == set(sent)
    for rid, c in refused.items():
        s = sent[rid]
        assert c["version"] == s.version
        assert c["stage"] == ("production" if s.version == 2 else "canary")
        assert c["prediction"] is None and c["model"] == "(none)" and c["fallback"] is False
        assert c["error"].startswith(f"{s.status} {s.code}: ")
        assert c["status"] == s.status
        assert len(c["error"]) <= 500
        assert orjson.loads(c["features"]) == s.features
        assert c["segment"] == s.features.get("origin")
        assert c["latency_ms"] > 0
    assert len(refused["bad-40"]["error"]) == 500  # the long list of unknown features, cut
    assert "features.temp" in refused["bad-0"]["error"]

    assert {records[rid]["status"] for rid in answered} == {200}
    typed = query_captures(
        Settings(home=home).artifact_root,
        "SELECT count(*) FROM captures WHERE request_id LIKE 'ok-%'"
        " AND features IS NULL AND inputs.origin IS NOT NULL",
    )
    assert typed.column(0).to_pylist() == [len(answered)]  # answered: stored typed

    answered_by = {v: sum(1 for a in answered.values() if a == v) for v in versions}
    assert answered_by[2] + answered_by[canary] == 60
    # 422 and 5xx count against the version that refused; 400/413/415 (the request's own
    # fault, whatever the version) are counted apart.
    own_fault = {400, 413, 415}
    for v in versions:
        stats = live_stats(captures, v, stage="production" if v == 2 else "canary")
        theirs = [rid for rid in by_version[v] if sent[rid].status not in own_fault]
        mine = [rid for rid in by_version[v] if sent[rid].status in own_fault]
        assert (stats.requests, stats.errors, stats.client_errors) == (
            answered_by[v] + len(theirs),
            len(theirs),
            len(mine),
        )
        assert stats.error_rate == len(theirs) / stats.requests
