"""A multiclass pipeline served by a real server: the answer is the most probable class and each
class's probability, the captures keep both, and the gates judge a multiclass candidate on the
captured traffic (replay: max |Δp| over the classes)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from serving_support import Server

from kiln.config import load_config
from kiln.config.deploy import ShadowPolicy
from kiln.gates.base import GateContext
from kiln.gates.champion import ChampionChallengerGate
from kiln.gates.quality import DataQualityGate
from kiln.gates.replay import ReplayGate
from kiln.gates.shadow import ShadowGate
from kiln.registry import Predictor, Stages
from kiln.registry.version import Version
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import open_stores
from kiln.stores.capture import read_captures
from tests.multiclass_support import CLASSES, pipeline, write_rows

pytestmark = pytest.mark.slow

NAME = "classes"
ROWS = [
    {"x": 2.0, "z": 0.0, "kind": "p", "seg": "a"},
    {"x": -2.0, "z": 0.5, "kind": "q", "seg": "b"},
    {"x": 0.2, "z": -1.0, "kind": "r", "seg": "c"},  # no model for c: the fallback answers
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """v1 (production, capture 100%) and v2 (more trees, in shadow) of a 3-class pipeline,
    served by a real server (the captures are flushed when it stops); v3, a candidate of the
    same pipeline with a two-label target (on_time / delayed)."""
    base = tmp_path_factory.mktemp("multiclass")
    source = write_rows(base / "rows.parquet")
    settings = Settings(home=base / "home")
    stores = open_stores(settings, upgrade=True)
    try:
        for version, trees in ((1, 20), (2, 40)):
            data = pipeline(source, capture={"sample_rate": 1.0})
            data["model"]["params"]["n_estimators"] = trees
            path = base / f"kiln.v{version}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            assert Runner(settings, stores).run(load_config(path)).version == version
        binary = pipeline(
            source,
            data={"query": "SELECT *, CASE WHEN status = 'early' THEN 'on_time' ELSE 'delayed'"
                  " END AS on_time FROM data"},
            target={"column": "on_time", "task": "classification"},
        )  # fmt: skip
        path = base / "kiln.v3.yaml"
        path.write_text(yaml.safe_dump(binary, sort_keys=False))
        assert Runner(settings, stores).run(load_config(path)).version == 3  # two text labels
        Stages(stores.metadata).promote(NAME, 1, actor="tests")
        Stages(stores.metadata).set_shadow(NAME, 2, actor="tests")
        with stores.metadata.unit_of_work() as uow:
            digest = uow.versions.get(NAME, 1).manifest_digest
        v1 = Predictor.load(stores.content, digest, label="v1")
    finally:
        stores.close()
    server = Server(settings.home)
    try:
        server.wait_ready()
        yield SimpleNamespace(server=server, settings=settings, v1=v1)
    finally:
        server.stop()


def test_the_answer_is_the_top_class_and_every_class_probability(served: SimpleNamespace) -> None:
    expected = served.v1.predict(ROWS)
    url = f"{served.server.url}/v1/pipelines/{NAME}/predict"
    with httpx.Client(timeout=30) as client:
        singles = [client.post(url, json={"features": row}).json() for row in ROWS]
        batch = client.post(url, json={"instances": ROWS}).json()
        detail = client.get(f"{served.server.url}/v1/pipelines/{NAME}").json()
    assert [s["prediction"] for s in singles] == expected.labels()
    assert [s["model"] for s in singles] == ["a", "b", "__fallback__"]
    assert [s["fallback"] for s in singles] == [False, False, True]
    for s, p in zip(singles, expected.probabilities, strict=True):
        assert list(s["probabilities"]) == CLASSES
        np.testing.assert_allclose(list(s["probabilities"].values()), p)
    assert batch["predictions"] == expected.labels() and batch["models"] == expected.model
    np.testing.assert_allclose(
        [list(p.values()) for p in batch["probabilities"]], expected.probabilities
    )
    assert detail["production"]["classes"] == CLASSES


def test_the_captures_keep_the_label_and_the_probabilities_and_the_gates_judge(
    served: SimpleNamespace,
) -> None:
    url = f"{served.server.url}/v1/pipelines/{NAME}/predict"
    rng = np.random.default_rng(3)
    traffic = [
        {"x": float(x), "z": float(z), "kind": k, "seg": s}
        for x, z, k, s in zip(
            rng.normal(size=60), rng.normal(size=60), rng.choice(["p", "q"], 60),
            rng.choice(["a", "b"], 60), strict=True,
        )
    ]  # fmt: skip
    with httpx.Client(timeout=30) as client:
        answers = [client.post(url, json={"features": row}).json() for row in traffic]
    served.server.stop()  # flushes the captures
    captured = read_captures(served.settings.artifact_root, NAME)
    ids = pa.array([a["request_id"] for a in answers])
    mine = captured.filter(pc.is_in(captured["request_id"], value_set=ids))
    assert mine.num_rows == len(answers)
    by_id = {a["request_id"]: a for a in answers}
    for rid, label, proba, value in zip(
        mine["request_id"].to_pylist(), mine["label"].to_pylist(),
        mine["probabilities"].to_pylist(), mine["prediction"].to_pylist(), strict=True,
    ):  # fmt: skip
        answer = by_id[rid]
        assert label == answer["prediction"]
        assert dict(proba) == pytest.approx(answer["probabilities"])
        assert value == pytest.approx(max(answer["probabilities"].values()))

    stores = open_stores(served.settings)
    try:
        with stores.metadata.unit_of_work() as uow:
            v1 = Version(stores, uow.versions.get(NAME, 1))
            v2 = Version(stores, uow.versions.get(NAME, 2))
        context = GateContext(stores, served.settings.artifact_root, v2.policy)
        quality = DataQualityGate().evaluate(v2, v1, context)
        assert quality.status == "passed", quality.summary
        assert quality.evidence["probabilities_not_summing_to_1"] == 0
        assert "class probabilities summing to 1" in quality.summary

        champion = ChampionChallengerGate().evaluate(v2, v1, context)
        assert champion.evidence["metric"] == "logloss"
        assert champion.evidence["overall"]["candidate"] > 0
        assert champion.evidence["overall"]["champion"] > 0

        shadowed = [*traffic, *ROWS, *ROWS]  # and the first test's singles and batch
        shifts = np.abs(
            v2.predictor.predict(shadowed).probabilities
            - v1.predictor.predict(shadowed).probabilities
        ).max(axis=1)  # max |Δp| over the classes, per request
        # judged on the shift of the answers; latency on a loaded test machine is not the point
        shadow_policy = v2.policy.model_copy(
            update={"shadow": ShadowPolicy(min_requests=60, max_p99_ratio=1e6)}
        )
        shadow = ShadowGate().evaluate(
            v2, v1, GateContext(stores, served.settings.artifact_root, shadow_policy)
        )
        assert shadow.status == "passed", shadow.summary
        assert shadow.evidence["compared"] == len(shadowed)
        assert shadow.evidence["max_shift"] == pytest.approx(shifts.max())
        assert shadow.evidence["mean_shift"] == pytest.approx(shifts.mean())

        replay = ReplayGate().evaluate(v2, v1, context)
        diff = replay.evidence["diff"]
        # judged on probabilities with the default tolerance of a classifier (0.1)
        assert replay.evidence["max_abs_diff"] == pytest.approx(0.1)
        assert diff["share_beyond"] == pytest.approx(diff["beyond"] / diff["requests"])
        expected = "failed" if diff["share_beyond"] > 0.05 else "passed"
        assert replay.status == expected, replay.summary
        assert replay.evidence["classes"] == CLASSES
        assert diff["requests"] >= len(traffic)
        assert 0 < diff["max_abs_diff"] <= 1 and diff["mean_diff"] == diff["mean_abs_diff"]
        same = ReplayGate().evaluate(v1, v1, context)  # v1 replayed on its own answers
        assert same.evidence["diff"]["max_abs_diff"] == pytest.approx(0, abs=1e-9)
    finally:
        stores.close()


def test_champion_challenger_scores_labels_and_refuses_another_target(
    served: SimpleNamespace,
) -> None:
    stores = open_stores(served.settings)
    try:
        with stores.metadata.unit_of_work() as uow:
            v1 = Version(stores, uow.versions.get(NAME, 1))
            v3 = Version(stores, uow.versions.get(NAME, 3))
        context = GateContext(stores, served.settings.artifact_root, v3.policy)
        other = ChampionChallengerGate().evaluate(v3, v1, context)
        assert other.status == "failed"
        assert "the classes ['early', 'late', 'very_late']" in other.summary
        assert "P(on_time) of the labels ['delayed', 'on_time']" in other.summary
        same = ChampionChallengerGate().evaluate(v3, v3, context)  # text labels are scored
        assert same.status == "passed" and same.evidence["metric"] == "auc"
        assert 0.5 < same.evidence["overall"]["candidate"] == same.evidence["overall"]["champion"]
    finally:
        stores.close()
