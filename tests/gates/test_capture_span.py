"""The gates that read captures say in their evidence which capture times they read
(``captures_from``, ``captures_until``), and `kiln gc` keeps the capture files of those days for
every version not archived: a gate's evidence names their request ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from kiln.gates.features import FeatureAvailabilityGate
from kiln.gates.replay import ReplayGate
from kiln.gates.shadow import ShadowGate
from kiln.registry.gc import plan_gc
from tests.gates.conftest import PIPELINE, GateEnv, GateHome, gate_config


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _span(evidence: dict[str, Any]) -> tuple[str, str]:
    return evidence["captures_from"], evidence["captures_until"]


def test_gates_record_the_capture_times_they_read(
    gate_env: GateEnv, traffic_rows: list[dict[str, Any]]
) -> None:
    production = gate_env.version(GateHome.PRODUCTION)
    candidate = gate_env.version(GateHome.HONEST)
    # now, not at import: the shadow gate reads production's captures since its period began
    # (less the clock skew), so "today's" captures must be from just before it
    now = datetime.now(UTC)
    old = gate_env.capture(production, traffic_rows[:20], ts=now - timedelta(days=10))
    new = gate_env.capture(
        production, traffic_rows[20:40], ids=[f"new-{i}" for i in range(20)], ts=now
    )
    first, last = old[0].ts, new[-1].ts
    context = gate_env.context()
    replay = ReplayGate().evaluate(candidate, production, context)
    assert replay.status == "passed", replay.summary
    assert _span(replay.evidence) == (_iso(first), _iso(last))
    features = FeatureAvailabilityGate().evaluate(candidate, production, context)
    assert _span(features.evidence) == (_iso(first), _iso(last))
    # a window of the newest 20 reads today's only
    narrow = gate_env.context(gate_env.policy(gates={"replay": {"window": 20}}))
    replay = ReplayGate().evaluate(candidate, production, narrow)
    assert _span(replay.evidence) == (_iso(new[0].ts), _iso(last))

    # the shadow gate: the shadow captures of its period and the production ones since then
    gate_env.set_shadow(GateHome.HONEST)
    later = datetime.now(UTC) + timedelta(seconds=1)
    ids = [f"s-{i}" for i in range(20)]
    gate_env.capture(production, traffic_rows[40:60], ids=ids, ts=later)
    shadow = gate_env.capture(candidate, traffic_rows[40:60], ids=ids, stage="shadow", ts=later)
    policy = gate_env.policy(shadow={"min_requests": 10})
    result = ShadowGate().evaluate(candidate, production, gate_env.context(policy))
    assert result.status == "passed", result.summary
    # production's captures of today (read since the period began, minus the clock skew)
    assert _span(result.evidence) == (_iso(new[0].ts), _iso(shadow[-1].ts))


def test_gc_keeps_every_capture_day_a_gate_result_read(
    gate_env: GateEnv, traffic_rows: list[dict[str, Any]], warehouse: Path
) -> None:
    """A replay gate read days -10..0; the retention is 3 days and the next replay reads only
    today's captures: days -10 and -6 are kept as long as the version is not archived."""
    production = gate_env.version(GateHome.PRODUCTION)
    candidate = gate_env.version(GateHome.HONEST)
    now = datetime.now(UTC)
    for day in (10, 6, 0):
        ids = [f"d{day}-{i}" for i in range(10)]
        gate_env.capture(production, traffic_rows[:10], ids=ids, ts=now - timedelta(days=day))
    result = ReplayGate().evaluate(candidate, production, gate_env.context())
    assert result.status == "passed", result.summary
    stores = gate_env.stores
    with stores.metadata.unit_of_work() as uow:
        uow.gates.record(PIPELINE, candidate.number, "replay", result.status, "", result.evidence)
        # the newest run's config: 3 days of captures, a replay window of today's 10 requests
        text = yaml.safe_dump(
            gate_config(
                warehouse,
                capture={"retention": "3d"},
                deploy={"gates": {"replay": {"window": 10}}},
            )
        )
        run = uow.runs.create(PIPELINE, "manual", text, "c" * 64, "kiln.yaml", "h", 1)
        uow.runs.mark_finished(run.id, "succeeded")

    def listed_days() -> set[str]:
        items = plan_gc(stores, grace=timedelta(0), pipeline=PIPELINE).items
        return {i.key.split("/")[2] for i in items if i.kind == "captures"}

    assert listed_days() == set()
    with stores.metadata.unit_of_work() as uow:
        uow.versions.set_stage(PIPELINE, candidate.number, "archived")
    days = {f"date={(now - timedelta(days=d)).date()}" for d in (10, 6)}
    assert listed_days() == days
