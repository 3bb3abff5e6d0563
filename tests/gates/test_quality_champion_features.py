"""The data quality, champion/challenger and feature availability gates on real versions
trained on the real flights (two winter months, small LightGBM models per origin)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from kiln.config import load_config
from kiln.gates.base import GateContext
from kiln.gates.champion import ChampionChallengerGate
from kiln.gates.features import FeatureAvailabilityGate
from kiln.gates.quality import DataQualityGate
from kiln.registry import Stages
from kiln.registry.version import Version
from kiln.runs.runner import Runner
from kiln.settings import Settings
from kiln.stores import open_stores
from kiln.stores.capture import CaptureRecord, CaptureWriter
from tests.conftest import BASE, merge

P = BASE["name"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, warehouse: Path) -> Iterator[SimpleNamespace]:
    home = tmp_path_factory.mktemp("gates")
    settings = Settings(home=home / ".kiln")
    stores = open_stores(settings, upgrade=True)

    def train(name: str, **changes: Any) -> Version:
        data = merge(merge(BASE, {"data": {"source": str(warehouse)}}), changes)
        path = home / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        # force: "same" retrains the production config, which would be skipped as unchanged
        result = Runner(settings, stores).run(load_config(path), force=True)
        with stores.metadata.unit_of_work() as uow:
            return Version(stores, uow.versions.get(P, result.version))

    champion = train("v1")
    Stages(stores.metadata).promote(P, champion.number, actor="setup")
    yield SimpleNamespace(settings=settings, stores=stores, train=train, champion=champion)
    stores.close()


def context(env: SimpleNamespace, version: Version) -> GateContext:
    return GateContext(env.stores, env.settings.artifact_root, version.policy)


def capture(env: SimpleNamespace, version: Version, rows: list[dict[str, Any]]) -> None:
    """Write what the server would capture for ``rows`` answered by ``version``."""
    prediction = version.predictor.predict(rows)
    now = datetime.now(UTC)
    with CaptureWriter(env.settings.artifact_root, writer_id="test") as writer:
        for i, row in enumerate(rows):
            writer.offer(
                CaptureRecord(
                    request_id=f"req-{version.number}-{i}",
                    ts=now,
                    pipeline=P,
                    version=version.number,
                    stage="production",
                    segment=row.get("origin"),
                    model=prediction.model[i],
                    fallback=bool(prediction.fallback[i]),
                    features=row,
                    prediction=float(prediction.values[i]),
                    error=None,
                    latency_ms=1.0,
                )
            )


def requests(version: Version, n: int, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    frame = version.holdout[version.features].head(n).drop(columns=list(drop))
    rows: list[dict[str, Any]] = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return rows


# -- data quality --------------------------------------------------------------------------------


def test_data_quality_passes_an_honest_version(env: SimpleNamespace) -> None:
    result = DataQualityGate().evaluate(env.champion, None, context(env, env.champion))
    assert result.status == "passed", result.summary
    ev = result.evidence
    assert ev["holdout_rows"] == len(env.champion.holdout) > 1000
    assert ev["nonfinite"] == ev["out_of_range"] == 0
    assert ev["training_checks"]["status"] == "succeeded"
    assert 0 <= ev["fallback_share"] <= 0.2


def test_data_quality_fails_out_of_range_answers_and_says_how_many(env: SimpleNamespace) -> None:
    candidate = env.train(
        "narrow", deploy={"gates": {"data_quality": {"prediction_range": {"max": 0}}}}
    )
    result = DataQualityGate().evaluate(candidate, env.champion, context(env, candidate))
    assert result.status == "failed"
    values = candidate.predictor.predict(candidate.holdout).values
    above = int((values > 0).sum())
    assert above > 0
    assert result.evidence["out_of_range"] == above
    assert f"{above} predictions outside [-inf, 0" in result.summary
    assert all(e["prediction"] > 0 for e in result.evidence["examples"])


def test_data_quality_fails_when_the_fallback_answers_too_much(env: SimpleNamespace) -> None:
    candidate = env.train("ewr-only", segments={"values": ["EWR"]})
    result = DataQualityGate().evaluate(candidate, env.champion, context(env, candidate))
    assert result.status == "failed"
    by_segment = result.evidence["fallback_by_segment"]
    assert by_segment["JFK"] == by_segment["LGA"] == 1.0 and by_segment["EWR"] == 0.0
    assert "answered by the fallback (at most 20.0%)" in result.summary


# -- champion / challenger -------------------------------------------------------------------------


def test_champion_challenger_is_skipped_for_the_first_version(env: SimpleNamespace) -> None:
    result = ChampionChallengerGate().evaluate(env.champion, None, context(env, env.champion))
    assert result.status == "skipped"


def test_a_retrained_equal_model_passes(env: SimpleNamespace) -> None:
    candidate = env.train("same")
    result = ChampionChallengerGate().evaluate(candidate, env.champion, context(env, candidate))
    assert result.status == "passed", result.summary
    assert result.evidence["overall"]["regression"] == pytest.approx(0.0, abs=1e-9)
    assert set(result.evidence["segments"]) == {"EWR", "JFK", "LGA"}


def test_a_weaker_model_fails_naming_the_segments(env: SimpleNamespace) -> None:
    candidate = env.train(
        "weak", model={"params": {"n_estimators": 1, "num_leaves": 2}}, features=["hour", "origin"]
    )
    result = ChampionChallengerGate().evaluate(candidate, env.champion, context(env, candidate))
    assert result.status == "failed"
    ev = result.evidence
    # Recompute the overall mae of both on the candidate's holdout by hand.
    rows = candidate.holdout
    y = rows["arr_delay"].to_numpy(dtype=float)
    mine = np.mean(np.abs(candidate.predictor.predict(rows).values - y))
    theirs = np.mean(np.abs(env.champion.predictor.predict(rows).values - y))
    assert ev["overall"]["candidate"] == pytest.approx(mine)
    assert ev["overall"]["champion"] == pytest.approx(theirs)
    assert ev["regressed_segments"], ev
    for seg in ev["regressed_segments"]:
        assert ev["segments"][seg]["regression"] > ev["tolerance"]
        assert seg in result.summary


# -- feature availability --------------------------------------------------------------------------


def test_feature_availability(env: SimpleNamespace, tmp_path: Path) -> None:
    gate = FeatureAvailabilityGate()
    leaky = env.train("leaky", features=[*BASE["features"], "dep_delay"])
    assert gate.evaluate(leaky, env.champion, context(env, leaky)).status == "skipped"

    capture(env, env.champion, requests(env.champion, 200))
    result = gate.evaluate(leaky, env.champion, context(env, leaky))
    assert result.status == "failed"
    assert result.evidence["missing"] == ["dep_delay"]
    assert result.evidence["captured_requests"] == 200
    assert "dep_delay (sent in 0% of 200 requests)" in result.summary
    assert len(result.evidence["requests_without"]["dep_delay"]) == 20

    # The champion's own features were all sent.
    assert gate.evaluate(env.champion, None, context(env, env.champion)).status == "passed"

    declared = env.train(
        "declared",
        features=[*BASE["features"], "dep_delay"],
        deploy={"gates": {"feature_availability": {"available": ["dep_delay"]}}},
    )
    assert gate.evaluate(declared, env.champion, context(env, declared)).status == "passed"
