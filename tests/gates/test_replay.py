"""The replay gate on real versions and real captured traffic: production (v1) answered real
March flights; each candidate replays them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from kiln.gates.base import MAX_EXAMPLES
from kiln.gates.replay import ReplayGate, replay
from kiln.stores import read_captures
from kiln.stores.capture import CAPTURE_SCHEMA
from tests.gates.conftest import PIPELINE, GateEnv, GateHome

pytestmark = pytest.mark.slow


@pytest.fixture
def served(gate_env: GateEnv, traffic_rows: list[dict[str, Any]]) -> GateEnv:
    """``gate_env`` after production (v1) answered ``traffic_rows``, captured."""
    gate_env.capture(gate_env.version(GateHome.PRODUCTION), traffic_rows)
    return gate_env


def test_an_honest_retrained_candidate_passes_with_its_differences_as_evidence(
    served: GateEnv, traffic_rows: list[dict[str, Any]]
) -> None:
    production = served.version(GateHome.PRODUCTION)
    candidate = served.version(GateHome.HONEST)
    policy = served.policy(gates={"replay": {"max_abs_diff": 60.0}})
    result = ReplayGate().evaluate(candidate, production, served.context(policy))

    assert result.status == "passed", result.summary
    assert "400 production requests replayed on v2" in result.summary
    ev = result.evidence
    assert ev["versions"] == {"candidate": 2, "champion": 1, "production": {"1": 400}}
    assert (ev["window"], ev["captured"], ev["replayed"], ev["failed"]) == (10_000, 400, 400, 0)
    assert ev["failures"] == [] and ev["reasons"] == {}
    assert ev["segment_column"] == "origin"

    diff = (
        candidate.predictor.predict(traffic_rows).values
        - production.predictor.predict(traffic_rows).values
    )
    assert ev["diff"]["requests"] == 400
    assert ev["diff"]["mean_abs_diff"] == pytest.approx(np.abs(diff).mean())
    assert ev["diff"]["max_abs_diff"] == pytest.approx(np.abs(diff).max())
    assert ev["diff"]["mean_diff"] == pytest.approx(diff.mean())
    assert ev["diff"]["beyond"] == int((np.abs(diff) > 60).sum())
    assert 0 < ev["diff"]["mean_abs_diff"] < 60
    origins = np.array([r["origin"] for r in traffic_rows])
    assert set(ev["segments"]) == set(origins)
    for origin, stats in ev["segments"].items():
        mine = np.abs(diff[origins == origin])
        assert stats["requests"] == mine.size
        assert stats["mean_abs_diff"] == pytest.approx(mine.mean())
        assert stats["max_abs_diff"] == pytest.approx(mine.max())
    orjson.dumps(ev)  # the evidence is stored as JSON


def test_a_candidate_needing_a_feature_the_requests_lack_fails_naming_requests_and_feature(
    served: GateEnv,
) -> None:
    candidate = served.version(GateHome.NEEDS_DEP_DELAY)
    assert "dep_delay" in candidate.features
    result = ReplayGate().evaluate(candidate, None, served.context())

    assert result.status == "failed"
    assert "400 of 400 production requests fail on v3" in result.summary
    assert "missing feature 'dep_delay'" in result.summary
    ev = result.evidence
    assert ev["failed"] == 400 and ev["compared"] == 0
    assert ev["reasons"] == {"missing feature 'dep_delay'": 400}
    assert len(ev["failures"]) == MAX_EXAMPLES
    first = ev["failures"][0]
    assert first["request_id"] == "req-0"
    assert first["reason"] == "missing feature 'dep_delay'"
    assert "dep_delay" not in first["features"] and first["features"]["origin"]


def test_answers_outside_the_candidates_prediction_range_fail_their_requests(
    served: GateEnv, traffic_rows: list[dict[str, Any]]
) -> None:
    candidate = served.version(GateHome.OUT_OF_RANGE)
    answers = candidate.predictor.predict(traffic_rows).values
    outside = np.flatnonzero((answers < -10) | (answers > 10))
    assert 0 < outside.size < 400  # the range cuts some of the real answers, not all

    result = ReplayGate().evaluate(candidate, None, served.context())

    assert result.status == "failed"
    ev = result.evidence
    assert ev["allowed_range"] == [-10, 10]
    assert ev["failed"] == outside.size
    assert ev["reasons"] == {"answer outside the allowed range [-10.0, 10.0]": outside.size}
    assert ev["compared"] == 400 - outside.size
    shown = ev["failures"]
    assert [f["request_id"] for f in shown] == [f"req-{i}" for i in outside[:MAX_EXAMPLES]]
    assert shown[0]["reason"].startswith("answer outside the allowed range [-10.0, 10.0], got ")


def test_diff_stats_match_a_hand_computation(
    gate_env: GateEnv, traffic_rows: list[dict[str, Any]]
) -> None:
    """Production's captured answers are the candidate's own plus known offsets."""
    candidate = gate_env.version(GateHome.HONEST)
    rows = [traffic_rows[i] for i in range(6)]
    answers = candidate.predictor.predict(rows).values
    offsets = [0.5, -1.0, 2.0, -3.0, 0.0, 4.0]
    gate_env.capture(
        gate_env.version(GateHome.PRODUCTION),
        rows,
        predictions=[float(a + o) for a, o in zip(answers, offsets, strict=True)],
    )
    captures = read_captures(gate_env.capture_root, PIPELINE)
    report = replay(candidate.predictor, captures, max_abs_diff=1.5)

    assert (report.captured, report.replayed, report.failed) == (6, 6, 0)
    o = report.overall
    assert o.requests == 6
    assert o.mean_abs_diff == pytest.approx((0.5 + 1 + 2 + 3 + 0 + 4) / 6)
    assert o.max_abs_diff == pytest.approx(4.0)
    assert o.mean_diff == pytest.approx(-(0.5 - 1 + 2 - 3 + 0 + 4) / 6)  # candidate - prod
    assert (o.beyond, o.share_beyond) == (3, 0.5)  # |2|, |-3|, |4| > 1.5
    by_origin: dict[str, list[float]] = {}
    for row, off in zip(rows, offsets, strict=True):
        by_origin.setdefault(row["origin"], []).append(abs(off))
    assert set(report.segments) == set(by_origin)
    for origin, moved in by_origin.items():
        s = report.segments[origin]
        assert s.requests == len(moved)
        assert s.mean_abs_diff == pytest.approx(sum(moved) / len(moved))
        assert s.max_abs_diff == pytest.approx(max(moved))
        assert s.beyond == sum(m > 1.5 for m in moved)


def test_too_many_moved_answers_fail_the_gate(served: GateEnv) -> None:
    policy = served.policy(gates={"replay": {"max_abs_diff": 0.001, "max_share_beyond": 0.05}})
    candidate = served.version(GateHome.HONEST)
    result = ReplayGate().evaluate(candidate, None, served.context(policy))
    assert result.status == "failed"
    assert "of the answers moved more than 0.001 (at most 5.0% may)" in result.summary
    assert result.evidence["failed"] == 0
    assert result.evidence["diff"]["share_beyond"] > 0.05


def test_the_window_is_the_last_captured_requests(served: GateEnv) -> None:
    policy = served.policy(gates={"replay": {"window": 50}})
    result = ReplayGate().evaluate(served.version(GateHome.HONEST), None, served.context(policy))
    assert result.status == "passed", result.summary
    assert (result.evidence["captured"], result.evidence["replayed"]) == (50, 50)


def test_no_captured_traffic_skips_the_gate(gate_env: GateEnv) -> None:
    result = ReplayGate().evaluate(gate_env.version(GateHome.HONEST), None, gate_env.context())
    assert result.status == "skipped" and result.ok
    assert "no captured traffic yet" in result.summary


def test_each_request_is_checked_as_the_server_would_check_it(
    gate_env: GateEnv, traffic_rows: list[dict[str, Any]]
) -> None:
    """Requests the server would refuse fail one by one, each with its reason; requests
    production did not answer are not replayed."""
    candidate = gate_env.version(GateHome.HONEST)
    good = traffic_rows[0]
    cases: list[tuple[str, Any, float | None]] = [
        ("ok", good, 10.0),
        ("text-hour", {**good, "hour": "7"}, 10.0),
        ("number-origin", {**good, "origin": 3}, 10.0),
        ("bool-distance", {**good, "distance": True}, 10.0),
        ("unknown-key", {**good, "tailnum": "N14228"}, 10.0),
        ("missing-temp", {k: v for k, v in good.items() if k != "temp"}, 10.0),
        ("null-temp", {**good, "temp": None}, 10.0),
        ("not-an-object", [1, 2], 10.0),
        ("refused-by-production", {**good, "hour": "x"}, None),
    ]
    table = _captures([(rid, features, p) for rid, features, p in cases])
    report = replay(candidate.predictor, table)

    assert (report.captured, report.replayed) == (9, 8)
    reasons = {f["request_id"]: f["reason"] for f in report.failures}
    assert reasons == {
        "text-hour": "'hour': expected a finite number or null, got '7'",
        "number-origin": "'origin': expected a string or null, got 3",
        "bool-distance": "'distance': expected a finite number or null, got True",
        "unknown-key": "unknown feature 'tailnum' (the candidate does not take it)",
        "missing-temp": "missing feature 'temp'",
        "not-an-object": "features are not a JSON object, got [1,2]",
    }
    assert report.failed == 6 and report.overall.requests == 2  # "ok" and "null-temp"
    expected = candidate.predictor.predict([good, {**good, "temp": None}]).values
    assert report.overall.mean_abs_diff == pytest.approx(np.abs(expected - 10.0).mean())


def _captures(cases: list[tuple[str, Any, float | None]]) -> pa.Table:
    """A captures table (as read_captures returns it) of hand-made requests."""
    n = len(cases)
    columns: dict[str, Any] = {
        "request_id": [c[0] for c in cases],
        "ts": [datetime(2013, 3, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(n)],
        "version": [1] * n,
        "stage": ["production"] * n,
        "segment": ["JFK"] * n,
        "model": ["JFK"] * n,
        "fallback": [False] * n,
        "features": [orjson.dumps(c[1]).decode() for c in cases],
        "prediction": [c[2] for c in cases],
        "error": [None] * n,
        "latency_ms": [1.0] * n,
        "label": [None] * n,
        "probabilities": [None] * n,
        "unseen": [[]] * n,
        "status": [200 if c[2] is not None else 422 for c in cases],
        "event_ts": [None] * n,
    }
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in CAPTURE_SCHEMA})
