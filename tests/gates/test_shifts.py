"""Default gates against real shifts, on versions trained on the real flights: an ordinary
retrain on a week more data passes; the target scaled by 1.3 on half of the rows, and a
segment that vanished from the data, fail by default, with the evidence saying why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kiln.config import load_config
from kiln.gates.champion import ChampionChallengerGate
from kiln.gates.replay import ReplayGate, tolerance
from kiln.runs import Runner
from tests.gates.conftest import GateEnv, GateHome, gate_config

pytestmark = pytest.mark.slow

MONTHS = "SELECT * FROM flights WHERE month IN (1, 2)"
VARIANTS: dict[str, dict[str, Any]] = {
    # Retrained a week later: one more week of training rows, the holdout a week later.
    "week": {
        "data": {"query": f"{MONTHS} OR (month = 3 AND day <= 7)"},
        "evaluation": {"split": {"holdout_start": "2013-02-22"}},
    },
    # The scenario: the target scaled by 1.3 on the rows before 14:00 (about half).
    "scaled": {
        "data": {
            "query": "SELECT * REPLACE (CASE WHEN hour < 14 THEN arr_delay * 1.3"
            " ELSE arr_delay END AS arr_delay) FROM flights WHERE month IN (1, 2)"
        }
    },
    # JFK's flights are gone from the data: the candidate answers them with its fallback.
    "no_jfk": {"data": {"query": f"{MONTHS} AND origin <> 'JFK'"}},
    # A classifier: its answers are probabilities.
    "late": {
        "data": {
            "query": "SELECT *, (arr_delay > 15)::INT AS late FROM flights WHERE month IN (1, 2)"
        },
        "target": {"column": "late", "task": "classification"},
        "model": {"estimator": "lightgbm.LGBMClassifier"},
        "evaluation": {"metrics": ["auc", "logloss"], "primary": "auc"},
    },
}


@pytest.fixture(scope="module")
def shifted(
    gate_home: GateHome,
    tmp_path_factory: pytest.TempPathFactory,
    warehouse: Path,
    traffic_rows: list[dict[str, Any]],
) -> Iterator[tuple[GateEnv, dict[str, int]]]:
    """The gate home with one version per variant, and production (v1) having answered the
    400 March flights of ``traffic_rows``."""
    base = tmp_path_factory.mktemp("shifts")
    env = GateEnv(gate_home.copy(base / "home"))
    runner = Runner(env.settings, env.stores)
    numbers: dict[str, int] = {}
    for name, changes in VARIANTS.items():
        path = base / f"kiln.{name}.yaml"
        path.write_text(yaml.safe_dump(gate_config(warehouse, **changes), sort_keys=False))
        numbers[name] = runner.run(load_config(path)).version
    env.capture(env.version(GateHome.PRODUCTION), traffic_rows)
    yield env, numbers
    env.close()


def test_an_ordinary_retrain_on_a_week_more_data_passes_the_default_gates(
    shifted: tuple[GateEnv, dict[str, int]],
) -> None:
    env, numbers = shifted
    production, candidate = env.version(GateHome.PRODUCTION), env.version(numbers["week"])

    result = ReplayGate().evaluate(candidate, production, env.context())
    assert result.status == "passed", result.summary
    ev = result.evidence
    std = candidate.manifest["reference_profile"]["__target__"]["std"]
    assert ev["max_abs_diff"] == pytest.approx(0.5 * std)
    assert ev["max_abs_diff_source"].startswith(
        f"deploy.gates.replay.max_abs_diff_std 0.5 x the target's std at training {std:.4g}"
        f" (v{candidate.number}'s manifest)"
    )
    assert ev["diff"]["share_beyond"] <= 0.05 and ev["fallback_segments"] == {}

    result = ChampionChallengerGate().evaluate(candidate, production, env.context())
    assert result.status == "passed", result.summary
    assert result.evidence["lost_segments"] == {}
    assert abs(result.evidence["target_spread"]["change"]) < 0.08
    changes = result.evidence["target_changes"]  # the flights both saw kept their arr_delay
    assert changes["matched_rows"] > 50_000 and changes["changed_rows"] == 0


def test_the_target_scaled_by_1_3_on_half_the_rows_fails_by_default(
    shifted: tuple[GateEnv, dict[str, int]],
) -> None:
    env, numbers = shifted
    production, candidate = env.version(GateHome.PRODUCTION), env.version(numbers["scaled"])
    result = ChampionChallengerGate().evaluate(candidate, production, env.context())

    assert result.status == "failed"
    changes = result.evidence["target_changes"]
    # the same Jan-Feb flights in both versions' data; arr_delay x 1.3 on those before 14:00
    both = production.rows.merge(candidate.rows, on="flight_id", suffixes=("_p", "_c"))
    moved = ~np.isclose(both.arr_delay_p.astype(float), both.arr_delay_c.astype(float))
    assert changes["matched_rows"] > 0.9 * len(both)
    assert changes["changed_share"] == pytest.approx(moved.mean(), abs=0.02)
    assert 0.3 < changes["changed_share"] < 0.7 and changes["failed"]
    assert changes["examples"][0]["after"] == pytest.approx(changes["examples"][0]["before"] * 1.3)
    assert "the target differs on" in result.summary
    # the spread of the target at training is an opt-in check (off by default)
    spread = result.evidence["target_spread"]
    assert spread["champion"] == production.manifest["reference_profile"]["__target__"]["std"]
    assert spread["candidate"] == candidate.manifest["reference_profile"]["__target__"]["std"]
    assert spread["change"] == pytest.approx(spread["candidate"] / spread["champion"] - 1, abs=1e-6)
    assert spread["max_change"] is None and not spread["moved"]


def test_a_segment_that_vanished_from_the_data_fails_champion_and_replay(
    shifted: tuple[GateEnv, dict[str, int]], traffic_rows: list[dict[str, Any]]
) -> None:
    env, numbers = shifted
    production, candidate = env.version(GateHome.PRODUCTION), env.version(numbers["no_jfk"])
    assert "JFK" in production.predictor.segments
    assert "JFK" not in candidate.predictor.segments

    result = ChampionChallengerGate().evaluate(candidate, production, env.context())
    assert result.status == "failed"
    assert result.evidence["lost_segments"] == {
        "JFK": {
            "reason": "absent from the candidate's data",
            "candidate_holdout_rows": 0,
            "champion_rows_train": production.manifest["models"]["JFK"]["rows_train"],
        }
    }
    assert "left to the fallback: JFK (absent from the candidate's data)" in result.summary

    jfk = sum(r["origin"] == "JFK" for r in traffic_rows)
    assert jfk > 0
    result = ReplayGate().evaluate(candidate, production, env.context())
    assert result.status == "failed"
    assert result.evidence["fallback_segments"] == {"JFK": {"requests": jfk, "compared": jfk}}
    assert f"get the fallback: JFK ({jfk} of {jfk})" in result.summary

    off = env.policy(gates={"replay": {"fail_on_fallback_segments": False}})
    result = ReplayGate().evaluate(candidate, production, env.context(off))
    assert result.status == "passed", result.summary
    assert f"get the fallback: JFK ({jfk} of {jfk})" in result.summary  # shown, not judged


@pytest.mark.parametrize(("moved_by", "status"), [(0.4, "passed"), (0.6, "failed")])
def test_the_default_replay_tolerance_is_half_the_targets_spread(
    gate_env: GateEnv, traffic_rows: list[dict[str, Any]], moved_by: float, status: str
) -> None:
    """Production's captured answers are the candidate's own, 20 of 40 moved by ``moved_by``
    standard deviations of the target at training."""
    candidate = gate_env.version(GateHome.HONEST)
    std = candidate.manifest["reference_profile"]["__target__"]["std"]
    rows = traffic_rows[:40]
    answers = candidate.predictor.predict(rows).values
    offsets = np.where(np.arange(40) % 2 == 0, moved_by * std, 0.0)
    gate_env.capture(
        gate_env.version(GateHome.PRODUCTION), rows, predictions=list(answers + offsets)
    )
    result = ReplayGate().evaluate(candidate, None, gate_env.context())
    assert result.status == status, result.summary
    assert result.evidence["diff"]["beyond"] == (20 if status == "failed" else 0)
    if status == "failed":
        assert "50.0% of the answers moved more than" in result.summary
        assert "tolerance: deploy.gates.replay.max_abs_diff_std 0.5" in result.summary

    explicit = gate_env.policy(gates={"replay": {"max_abs_diff": moved_by * std * 2}})
    result = ReplayGate().evaluate(candidate, None, gate_env.context(explicit))
    assert result.status == "passed"  # an explicit max_abs_diff wins
    assert result.evidence["max_abs_diff_source"] == "deploy.gates.replay.max_abs_diff"


def test_a_classifiers_default_replay_tolerance_is_on_probabilities(
    shifted: tuple[GateEnv, dict[str, int]],
) -> None:
    env, numbers = shifted
    classifier = env.version(numbers["late"])
    assert classifier.predictor.task == "classification"
    policy = env.policy().gates.replay
    assert tolerance(policy, classifier, env.version(GateHome.PRODUCTION)) == (
        0.1,
        "deploy.gates.replay.max_probability_diff (on probabilities)",
    )
    explicit = env.policy(gates={"replay": {"max_abs_diff": 0.2}}).gates.replay
    assert tolerance(explicit, classifier, None) == (0.2, "deploy.gates.replay.max_abs_diff")
