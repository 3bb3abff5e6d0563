"""Every bad input of the spine gets a clear error naming the place and the fix.

A failed run leaves its record as failed, releases the pipeline lock and registers nothing.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kiln.errors import (
    ConfigError,
    DataCheckError,
    KilnError,
    SchemaError,
    SourceError,
    StoreError,
    TrainingError,
)
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import Stores, open_stores

pytestmark = pytest.mark.slow


def assert_failed_cleanly(stores: Stores, pipeline: str = "flights-test") -> str:
    with stores.metadata.unit_of_work() as uow:
        [run] = uow.runs.list(pipeline=pipeline)
        assert run.status == "failed" and run.error
        assert uow.locks.get(pipeline) is None
        assert uow.versions.list(pipeline=pipeline) == []
    return run.error


def test_missing_feature_column(make_config, runner: Runner, stores: Stores) -> None:
    loaded = make_config(features=["origin", "distnce", "temp"])
    with pytest.raises(SchemaError) as info:
        runner.run(loaded)
    text = str(info.value)
    assert "features" in text and "'distnce'" in text and "distance" in text  # did you mean
    assert str(loaded.path) in text
    assert "distnce" in assert_failed_cleanly(stores)


def test_missing_target_column(make_config, runner: Runner, stores: Stores) -> None:
    with pytest.raises(SchemaError, match="target"):
        runner.run(make_config(target={"column": "arrival_delay"}))
    assert_failed_cleanly(stores)


def test_empty_query_result(make_config, runner: Runner, stores: Stores) -> None:
    with pytest.raises(SourceError) as info:
        runner.run(make_config(data={"query": "SELECT * FROM flights WHERE month = 13"}))
    assert "no rows" in str(info.value) and "data.query" in str(info.value)
    assert_failed_cleanly(stores)


def test_failing_query_names_the_database_error(
    make_config, runner: Runner, stores: Stores
) -> None:
    loaded = make_config(data={"query": "SELECT * FROM flihgts"})
    with pytest.raises(SourceError) as info:
        runner.run(loaded)
    assert "flihgts" in str(info.value)
    # the error points at the line of data.query (line 5), not data.source (line 4)
    assert str(info.value).startswith(f"{loaded.path}:5:10: data.query: the query failed")
    assert_failed_cleanly(stores)


def test_nulls_in_segment_column(make_config, runner: Runner, stores: Stores) -> None:
    query = (
        "SELECT * REPLACE (CASE WHEN day = 3 THEN NULL ELSE origin END AS origin) "
        "FROM flights WHERE month IN (1, 2)"
    )
    with pytest.raises(SchemaError) as info:
        runner.run(make_config(data={"query": query}, checks={"columns": None}))
    assert "null" in str(info.value) and "origin" in str(info.value)
    assert_failed_cleanly(stores)


def test_failing_data_check_reports_column_check_observed_and_examples(
    make_config, runner: Runner, stores: Stores
) -> None:
    loaded = make_config(
        checks={"columns": {"arr_delay": {"max": 60}, "origin": {"allowed": ["EWR", "JFK"]}}}
    )
    with pytest.raises(DataCheckError) as info:
        runner.run(loaded)
    report = {(r["column"], r["check"]): r for r in info.value.report}
    assert set(report) == {("arr_delay", "max"), ("origin", "allowed")}
    assert report["arr_delay", "max"]["observed"] > 60
    assert all(v > 60 for v in report["arr_delay", "max"]["failing_examples"])
    assert "LGA" in report["origin", "allowed"]["failing_examples"]
    assert "checks" in str(info.value)
    assert_failed_cleanly(stores)


def test_estimator_that_does_not_import(make_config, runner: Runner, stores: Stores) -> None:
    loaded = make_config(model={"estimator": "lightgbm.LGBMRegresor"})
    with pytest.raises(ConfigError) as info:
        runner.run(loaded)
    text = str(info.value)
    assert f"{loaded.path}:" in text and "model.estimator" in text
    assert "did you mean 'LGBMRegressor'" in text
    with pytest.raises(ConfigError, match="cannot import module 'sklearnx"):
        runner.run(make_config(model={"estimator": "sklearnx.linear.Model"}))
    with stores.metadata.unit_of_work() as uow:
        assert uow.runs.list() == []  # refused before a run was even recorded


def test_estimator_params_that_do_not_fit(make_config, runner: Runner) -> None:
    with pytest.raises(ConfigError, match=r"has no parameter .n_trees_please."):
        runner.run(make_config(model={"params": {"n_trees_please": 3}}))


def write_train(folder: Path, body: str) -> None:
    (folder / "badtrain.py").write_text(textwrap.dedent(body))


def test_train_function_that_raises_falls_back(
    make_config, runner: Runner, stores: Stores, tmp_path: Path
) -> None:
    write_train(
        tmp_path,
        """
        from lightgbm import LGBMRegressor

        def train(X, y, context):
            if context.segment == "JFK":
                raise ValueError("JFK data is broken today")
            return LGBMRegressor(n_estimators=10, verbose=-1).fit(X.to_numpy(), y.to_numpy())
    """,
    )
    loaded = make_config(model={"estimator": None, "params": None, "train": "badtrain:train"})
    result = runner.run(loaded)
    reason = result.manifest["routed_to_fallback"]["JFK"]["reason"]
    assert reason.startswith("training failed: ValueError: JFK data is broken today")
    assert set(result.manifest["models"]) == {"EWR", "LGA"}
    with stores.metadata.unit_of_work() as uow:
        jfk = next(t for t in uow.tasks.for_run(result.run_id) if t.segment == "JFK")
    assert jfk.status == "failed" and "JFK data is broken today" in jfk.error


def test_train_function_that_raises_fails_the_run_when_asked(
    make_config, runner: Runner, stores: Stores, tmp_path: Path
) -> None:
    write_train(
        tmp_path,
        """
        def train(X, y, context):
            if context.segment == "JFK":
                raise ValueError("JFK data is broken today")
            from lightgbm import LGBMRegressor
            return LGBMRegressor(n_estimators=10, verbose=-1).fit(X.to_numpy(), y.to_numpy())
    """,
    )
    loaded = make_config(
        model={"estimator": None, "params": None, "train": "badtrain:train"},
        segments={"on_segment_failure": "fail"},
    )
    with pytest.raises(TrainingError) as info:
        runner.run(loaded)
    assert "1 segment(s) failed to train: JFK: ValueError: JFK data is broken today" in str(
        info.value
    )
    assert "--resume" in str(info.value)
    assert_failed_cleanly(stores)


def test_train_function_without_predict(
    make_config, runner: Runner, stores: Stores, tmp_path: Path
) -> None:
    write_train(
        tmp_path,
        """
        def train(X, y, context):
            return {"weights": [1, 2, 3]}
    """,
    )
    loaded = make_config(model={"estimator": None, "params": None, "train": "badtrain:train"})
    with pytest.raises(TrainingError) as info:
        runner.run(loaded)
    text = str(info.value)
    assert "fallback" in text and "returned 'dict', which has no predict method" in text
    assert_failed_cleanly(stores)


def test_unreachable_metadata_database(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, db_url="postgresql://postgres@127.0.0.1:1/kiln")
    with pytest.raises(StoreError) as info:
        open_stores(settings, upgrade=True)
    assert "cannot reach the metadata database" in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


def test_unreachable_source_database(make_config, runner: Runner, stores: Stores) -> None:
    loaded = make_config(data={"source": "postgresql://postgres@127.0.0.1:1/warehouse"})
    with pytest.raises(SourceError) as info:
        runner.run(loaded)
    assert "127.0.0.1:1" in str(info.value) and "data.source" in str(info.value)
    assert_failed_cleanly(stores)


def test_resume_of_a_succeeded_run_is_refused(make_config, runner: Runner) -> None:
    result = runner.run(make_config())
    with pytest.raises(KilnError, match="already succeeded"):
        runner.resume(result.run_id)
