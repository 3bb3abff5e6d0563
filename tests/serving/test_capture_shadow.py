"""Capture and shadow on a real server (2 workers): after SIGTERM the capture files hold exactly
the requests the server said it captured, and the shadow version's answers sit beside
production's under the same request ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from serving_support import PIPELINE, Trained, predictor, set_stage

from kiln.settings import Settings
from kiln.stores import read_captures

pytestmark = pytest.mark.slow


def test_after_sigterm_the_captures_are_exactly_the_sampled_requests_and_shadow_beside_them(
    trained: Trained, serve, tmp_path: Path, flight_rows: list[dict[str, Any]]
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 1, "production")  # v1 captures 50% of requests
    set_stage(home, 2, "shadow")
    server = serve(home, workers=2)
    server.wait_ready()
    predict = f"{server.url}/v1/pipelines/{PIPELINE}/predict"

    expected: set[str] = set()
    answered: dict[str, dict[str, Any]] = {}
    sent_rows: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=30) as client:
        for i in range(200):
            rid = f"single-{i}"
            row = flight_rows[i]
            r = client.post(predict, json={"features": row}, headers={"X-Request-ID": rid})
            assert r.status_code == 200
            assert r.headers["x-kiln-captured"] in ("0", "1")
            if r.headers["x-kiln-captured"] == "1":
                expected.add(rid)
                answered[rid] = r.json()
                sent_rows[rid] = row
        for b in range(6):
            rid = f"batch-{b}"
            rows = flight_rows[200 + 10 * b : 210 + 10 * b]
            r = client.post(predict, json={"instances": rows}, headers={"X-Request-ID": rid})
            assert r.status_code == 200
            if r.headers["x-kiln-captured"] == "1":
                expected.update(f"{rid}:{j}" for j in range(10))
                for j, row in enumerate(rows):
                    sent_rows[f"{rid}:{j}"] = row
    assert 40 <= len([e for e in expected if e.startswith("single")]) <= 160  # about 50%

    assert server.stop() == 0  # SIGTERM: drain shadow, flush captures, exit cleanly
    root = Settings(home=home).artifact_root
    production = read_captures(root, PIPELINE, stage="production").to_pylist()
    assert sorted(c["request_id"] for c in production) == sorted(expected)
    assert {c["version"] for c in production} == {1}
    for c in production:
        assert orjson.loads(c["features"]) == sent_rows[c["request_id"]]
        assert c["segment"] == sent_rows[c["request_id"]]["origin"]
        assert c["latency_ms"] > 0 and c["error"] is None
        if c["request_id"] in answered:
            assert c["prediction"] == answered[c["request_id"]]["prediction"]
            assert c["model"] == answered[c["request_id"]]["model"]

    shadow = read_captures(root, PIPELINE, stage="shadow").to_pylist()
    assert sorted(c["request_id"] for c in shadow) == sorted(expected)
    assert {c["version"] for c in shadow} == {2}
    ids = sorted(expected)
    v2 = predictor(home, 2).predict([sent_rows[i] for i in ids])
    by_id = {c["request_id"]: c for c in shadow}
    assert [by_id[i]["prediction"] for i in ids] == v2.values.tolist()
    assert [by_id[i]["model"] for i in ids] == v2.model
    log = server.log()
    assert "captures:" in log and "dropped" in log
