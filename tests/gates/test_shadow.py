"""The shadow gate on real versions: v1 serves production, v2 shadows it; both answer real March
flights under the same request ids, captured as the server captures them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import orjson
import pytest

from kiln.gates.base import MAX_EXAMPLES
from kiln.gates.shadow import ShadowGate
from tests.gates.conftest import GateEnv, GateHome

pytestmark = pytest.mark.slow

N = 200


def _serve(env: GateEnv, rows: list[dict[str, Any]], **shadow: Any) -> None:
    """Production (v1) answers ``rows``; the shadow copy of each goes to v2."""
    env.capture(env.version(GateHome.PRODUCTION), rows, stage="production", latency_ms=2.0)
    env.capture(env.version(GateHome.HONEST), rows, stage="shadow", **shadow)


def test_pending_until_enough_shadow_requests_and_time(
    gate_env: GateEnv, traffic_rows: list[dict[str, Any]]
) -> None:
    started = gate_env.set_shadow(GateHome.HONEST)
    _serve(gate_env, traffic_rows[:N], latency_ms=3.0)
    candidate = gate_env.version(GateHome.HONEST)

    few = gate_env.policy(shadow={"min_requests": 300})
    result = ShadowGate().evaluate(candidate, None, gate_env.context(few))
    assert result.status == "pending"
    assert f"{N:,} of 300 requests" in result.summary
    ev = result.evidence
    assert (ev["requests"], ev["min_requests"], ev["version"]) == (N, 300, 2)
    assert ev["started_at"] == started.isoformat() and ev["ended_at"] is None

    hour = gate_env.policy(shadow={"min_duration": "1h", "min_requests": 100})
    result = ShadowGate().evaluate(candidate, None, gate_env.context(hour))
    assert result.status == "pending"
    assert result.evidence["min_duration_seconds"] == 3600
    assert result.evidence["elapsed_seconds"] < 3600

    later = gate_env.context(hour, now=started + timedelta(hours=2))
    assert ShadowGate().evaluate(candidate, None, later).status == "passed"


def test_honest_shadow_traffic_passes_with_every_number_in_the_evidence(
    gate_env: GateEnv, traffic_rows: list[dict[str, Any]]
) -> None:
    gate_env.set_shadow(GateHome.HONEST)
    rows = traffic_rows[:N]
    _serve(gate_env, rows, latency_ms=3.0)
    production = gate_env.version(GateHome.PRODUCTION)
    candidate = gate_env.version(GateHome.HONEST)
    policy = gate_env.policy(shadow={"min_requests": N, "max_mean_shift": 60.0})

    result = ShadowGate().evaluate(candidate, production, gate_env.context(policy))

    assert result.status == "passed", result.summary
    assert f"v2 shadowed {N} requests" in result.summary
    ev = result.evidence
    assert ev["paired"] == N and ev["production_versions"] == {"1": N}
    assert ev["shadow"]["requests"] == N and ev["shadow"]["errors"] == 0
    assert (ev["shadow"]["p99_ms"], ev["production_p99_ms"]) == (3.0, 2.0)
    assert ev["p99_ratio"] == pytest.approx(1.5)
    shift = np.abs(
        candidate.predictor.predict(rows).values - production.predictor.predict(rows).values
    )
    assert ev["mean_shift"] == pytest.approx(shift.mean())
    assert ev["max_shift"] == pytest.approx(shift.max())
    origins = np.array([r["origin"] for r in rows])
    assert set(ev["segments"]) == set(origins)
    for origin, seg in ev["segments"].items():
        assert seg["requests"] == int((origins == origin).sum())
        assert seg["mean_shift"] == pytest.approx(shift[origins == origin].mean())
    assert [(c["check"], c["ok"]) for c in ev["checks"]] == [
        ("error_rate", True),
        ("p99_ratio", True),
        ("mean_shift", True),
    ]
    orjson.dumps(ev)  # the evidence is stored as JSON


def test_shadow_errors_above_the_rate_and_slow_answers_fail(
    gate_env: GateEnv, traffic_rows: list[dict[str, Any]]
) -> None:
    gate_env.set_shadow(GateHome.HONEST)
    failing = [i % 10 == 0 for i in range(N)]  # 10% of the shadow copies failed
    _serve(gate_env, traffic_rows[:N], failing=failing, latency_ms=9.0)
    policy = gate_env.policy(shadow={"min_requests": N, "max_error_rate": 0.01})

    result = ShadowGate().evaluate(
        gate_env.version(GateHome.HONEST), None, gate_env.context(policy)
    )

    assert result.status == "failed"
    assert "error rate 10.00% > 1.00% (20 of 200 shadow requests failed)" in result.summary
    assert "p99 latency 9.0 ms is 4.50x production's 2.0 ms (at most 2x)" in result.summary
    ev = result.evidence
    assert ev["shadow"]["errors"] == 20
    assert {c["check"]: c["ok"] for c in ev["checks"]} == {
        "error_rate": False,
        "p99_ratio": False,
        "mean_shift": True,  # no limit set
    }
    assert len(ev["error_examples"]) == min(20, MAX_EXAMPLES)
    assert ev["error_examples"][0] == {
        "request_id": "req-0",
        "error": "RuntimeError: the shadow model failed",
    }


def test_a_mean_shift_above_the_limit_fails(
    gate_env: GateEnv, traffic_rows: list[dict[str, Any]]
) -> None:
    gate_env.set_shadow(GateHome.HONEST)
    _serve(gate_env, traffic_rows[:N], latency_ms=2.0)
    policy = gate_env.policy(shadow={"min_requests": N, "max_mean_shift": 0.01})

    result = ShadowGate().evaluate(
        gate_env.version(GateHome.HONEST), None, gate_env.context(policy)
    )

    assert result.status == "failed"
    assert "answers moved" in result.summary and "(at most 0.01)" in result.summary
    assert result.evidence["mean_shift"] > 0.01


def test_only_this_versions_shadow_period_counts(
    gate_env: GateEnv, traffic_rows: list[dict[str, Any]]
) -> None:
    """Shadow captures from before the period (an earlier one) are not counted; a version
    never shadowed is pending."""
    candidate = gate_env.version(GateHome.HONEST)
    policy = gate_env.policy(shadow={"min_requests": 10})
    result = ShadowGate().evaluate(candidate, None, gate_env.context(policy))
    assert result.status == "pending" and "has not been in shadow" in result.summary

    started = gate_env.set_shadow(GateHome.HONEST)
    old = started - timedelta(days=1)
    gate_env.capture(candidate, traffic_rows[:50], stage="shadow", ts=old)
    result = ShadowGate().evaluate(candidate, None, gate_env.context(policy))
    assert result.status == "pending" and result.evidence["requests"] == 0


def test_no_shadow_period_asked_skips_the_gate(gate_env: GateEnv) -> None:
    result = ShadowGate().evaluate(
        gate_env.version(GateHome.HONEST), None, gate_env.context(gate_env.policy())
    )
    assert result.status == "skipped" and result.ok
