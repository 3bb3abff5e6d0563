"""The gates against the candidate's own choices, on small synthetic versions (linear models per
region, trained by a train function): ``evaluation.refit``, ``serving.unseen_categories`` and
``segments.route_worse_to_fallback``. Production (v1) serves region ``west`` by a model that
answers a constant, far worse than the fallback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kiln.config import load_config
from kiln.config.deploy import DeployConfig
from kiln.gates.base import GateContext
from kiln.gates.champion import NO_INTERVAL, ChampionChallengerGate
from kiln.gates.replay import ReplayGate
from kiln.registry.version import Version
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import CaptureRecord, CaptureWriter, open_stores

NAME = "spend"
TRAIN_PY = """
import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline


class Constant:
    def predict(self, X):
        return np.zeros(len(X))


def linear(X, y, context):
    if context.segment == "west":
        return Constant()
    return make_pipeline(SimpleImputer(), LinearRegression()).fit(X, y)


def nearest(X, y, context):
    # 1-nearest neighbour: weak on unseen rows, exact on the rows it was fit on
    return make_pipeline(SimpleImputer(), KNeighborsRegressor(n_neighbors=1)).fit(X, y)
"""


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "region": rng.choice(["north", "south", "west"], n),
            "plan": rng.choice(["basic", "pro"], n),
            "tenure": rng.integers(1, 60, n).astype(float),
            "usage": rng.gamma(2.0, 10.0, n),
        }
    )
    base = df.region.map({"north": 100.0, "south": 300.0, "west": 200.0})
    slope = df.region.map({"north": 3.0, "south": -2.0, "west": 1.0})
    df["spend"] = base + slope * df.usage + 0.5 * df.tenure + rng.normal(0, 5, n)
    return df


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("policies")
    (root / "train.py").write_text(TRAIN_PY)
    rows(1500, seed=3).to_parquet(root / "rows.parquet")
    settings = Settings(home=root / ".kiln")
    stores = open_stores(settings, upgrade=True)
    runner = Runner(settings, stores)

    def train(name: str, fn: str = "linear", **changes: Any) -> Version:
        cfg = {
            "name": NAME,
            "owner": "tests@example.com",
            "data": {"source": str(root / "rows.parquet")},
            "target": "spend",
            "features": ["tenure", "usage", "plan"],
            "segments": {"column": "region", "min_rows": 50},
            "model": {"train": f"train:{fn}"},
            "evaluation": {"metrics": ["mae", "rmse"]},
            "resources": {"cpus": 1},
            **changes,
        }
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        number = runner.run(load_config(path)).version
        with stores.metadata.unit_of_work() as uow:
            return Version(stores, uow.versions.get(NAME, number))

    yield SimpleNamespace(settings=settings, stores=stores, train=train, production=train("v1"))
    stores.close()


def context(env: SimpleNamespace, captures: Path, **replay: Any) -> GateContext:
    policy = DeployConfig.model_validate({"gates": {"replay": replay}})
    return GateContext(env.stores, str(captures), policy)


def capture(env: SimpleNamespace, root: Path, requests: list[dict[str, Any]]) -> None:
    """What the server captures (under ``root``) when production answers ``requests``."""
    prediction = env.production.predictor.predict(requests)
    now = datetime.now(UTC)
    with CaptureWriter(str(root), writer_id="test") as writer:
        for i, row in enumerate(requests):
            writer.offer(
                CaptureRecord(
                    request_id=f"req-{i}",
                    ts=now + timedelta(microseconds=i),
                    pipeline=NAME,
                    version=env.production.number,
                    stage="production",
                    segment=row["region"],
                    model=prediction.model[i],
                    fallback=bool(prediction.fallback[i]),
                    features=row,
                    prediction=float(prediction.values[i]),
                    error=None,
                    latency_ms=1.0,
                )
            )
    assert writer.written == len(requests)


def traffic(n: int = 60, unseen_every: int = 0) -> list[dict[str, Any]]:
    """``n`` requests of all three regions; every ``unseen_every``-th with plan 'enterprise',
    which training never saw."""
    frame = rows(n, seed=11).drop(columns=["spend"])
    out: list[dict[str, Any]] = frame.to_dict("records")
    if unseen_every:
        for row in out[::unseen_every]:
            row["plan"] = "enterprise"
    return out


# -- evaluation.refit --------------------------------------------------------------------------


def test_a_refit_candidate_is_judged_by_its_first_fits_holdout_metrics(
    env: SimpleNamespace,
) -> None:
    """Refit on its holdout, a 1-nearest-neighbour model answers those rows exactly; its first
    fit, which never saw them, is worse than production's linear models in north and south."""
    candidate = env.train("refit", fn="nearest", evaluation={"metrics": ["mae"], "refit": True})
    assert candidate.manifest["evaluation"]["served_model_saw_holdout"] is True
    result = ChampionChallengerGate().evaluate(
        candidate, env.production, GateContext(env.stores, "", candidate.policy)
    )

    assert result.status == "failed", result.summary
    ev = result.evidence
    m = candidate.manifest
    assert ev["overall"]["candidate"] == m["metrics"]["overall"]["mae"]
    assert ev["candidate_side"].startswith("first fit")
    for seg in ("north", "south", "west"):
        row = ev["segments"][seg]
        assert row["candidate"] == m["models"][seg]["metrics"]["mae"]
        assert row["interval"] is None and row["interval_note"] == NO_INTERVAL
        assert row["rows"] == m["models"][seg]["rows_holdout"]
    assert sorted(ev["regressed_segments"]) == ["north", "south"]  # west: the constant is worse
    assert "(its first fit's, before refit)" in result.summary
    assert NO_INTERVAL in result.summary


# -- segments.route_worse_to_fallback ------------------------------------------------------------


def test_segments_routed_to_the_fallback_as_worse_are_notes_not_failures(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    candidate = env.train("routed", segments={"column": "region", "min_rows": 50,
                                              "route_worse_to_fallback": True})  # fmt: skip
    reason = candidate.manifest["routed_to_fallback"]["west"]["reason"]
    assert reason.startswith("worse than the fallback")

    result = ChampionChallengerGate().evaluate(
        candidate, env.production, GateContext(env.stores, "", candidate.policy)
    )
    assert result.status == "passed", result.summary
    assert result.evidence["lost_segments"] == {}
    assert result.evidence["routed_as_worse"] == {"west": reason}
    assert f"(segments.route_worse_to_fallback): west ({reason})" in result.summary

    requests = traffic()
    capture(env, tmp_path, requests)
    west = sum(r["region"] == "west" for r in requests)
    result = ReplayGate().evaluate(
        candidate, env.production, context(env, tmp_path, max_abs_diff=1e9)
    )
    assert result.status == "passed", result.summary
    ev = result.evidence
    assert ev["fallback_segments"] == {}
    assert ev["routed_as_worse"] == {"west": {"reason": reason, "requests": west, "compared": west}}
    assert f"west ({west} of {west}: {reason})" in result.summary


# -- serving.unseen_categories -------------------------------------------------------------------


def test_replay_refuses_unseen_categories_when_the_candidate_rejects_them(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    candidate = env.train("reject", serving={"unseen_categories": "reject"})
    requests = traffic(unseen_every=6)
    capture(env, tmp_path, requests)
    unseen = [f"req-{i}" for i, r in enumerate(requests) if r["plan"] == "enterprise"]

    result = ReplayGate().evaluate(candidate, env.production, context(env, tmp_path))

    assert result.status == "failed"
    reason = "unseen category 'enterprise' in feature 'plan' (unseen_categories: reject)"
    ev = result.evidence
    assert ev["failed"] == len(unseen) == 10
    assert ev["reasons"] == {reason: len(unseen)}
    assert [f["request_id"] for f in ev["failures"]] == unseen
    assert ev["compared"] == len(requests) - len(unseen)
    assert f"{len(unseen)} of {len(requests)} production requests fail" in result.summary


def test_rows_sent_to_the_fallback_for_an_unseen_category_are_counted_apart(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    candidate = env.train("to-fallback", serving={"unseen_categories": "fallback"})
    requests = traffic(unseen_every=6)
    capture(env, tmp_path, requests)
    unseen = sum(r["plan"] == "enterprise" for r in requests)
    assert unseen == 10  # production answered them with its segment models

    result = ReplayGate().evaluate(
        candidate, env.production, context(env, tmp_path, max_abs_diff=1e9)
    )

    assert result.status == "passed", result.summary
    ev = result.evidence
    assert ev["fallback_segments"] == {}
    assert ev["unseen_fallback"] == unseen
    assert f"{unseen} requests with an unseen category get the fallback" in result.summary
