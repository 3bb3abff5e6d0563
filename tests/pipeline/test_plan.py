"""Pure planning: time split without leakage, segment routing, feature encoding, metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kiln.config.models import PipelineConfig, SplitConfig
from kiln.errors import SchemaError
from kiln.pipeline import FALLBACK, FeatureSchema, plan_segments, score, time_cutoff


def config(**segments: object) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": "p",
            "owner": "o",
            "data": {"source": "x.duckdb", "query": "select 1", "time_column": "t"},
            "target": "y",
            "features": ["a"],
            "segments": {"column": "s", **segments},
            "model": {"estimator": "sklearn.linear_model.LinearRegression"},
        }
    )


def test_fraction_cutoff_never_puts_older_rows_in_holdout() -> None:
    t = pd.Series(pd.date_range("2013-01-01", periods=1000, freq="h")).sample(
        frac=1, random_state=0
    )
    cut = time_cutoff(t, SplitConfig(holdout_fraction=0.2))
    hold = t >= cut
    assert 190 <= hold.sum() <= 210
    assert t[~hold].max() < t[hold].min()


def test_holdout_start_cutoff() -> None:
    t = pd.Series(pd.date_range("2013-01-01", periods=365, freq="D"))
    cut = time_cutoff(t, SplitConfig.model_validate({"holdout_start": "2013-11-01"}))
    assert (t >= cut).sum() == 61


def test_segments_below_min_rows_go_to_fallback() -> None:
    plan = plan_segments(config(min_rows=100), {"A": 500, "B": 99, "C": 100})
    assert plan.trained == ["A", "C"]
    assert plan.to_fallback == {"B": "99 training rows < min_rows 100"}
    assert plan.tasks == ["A", "C", FALLBACK]


def test_declared_segment_without_rows_goes_to_fallback() -> None:
    plan = plan_segments(
        config(values=["A", "Z"], min_rows=1), {"A": 5, "B": 5}, declared=["A", "Z"]
    )
    assert plan.trained == ["A"]
    assert plan.to_fallback == {"Z": "no training rows"}


def test_feature_schema_encodes_categories_and_unseen_values() -> None:
    df = pd.DataFrame({"n": [1, 2, None], "c": ["x", "y", None]})
    schema = FeatureSchema.infer(df, ["n", "c"])
    assert [f.kind for f in schema.features] == ["numeric", "categorical"]
    X = schema.encode(pd.DataFrame({"n": [3.5, None], "c": ["y", "never-seen"]}))
    assert X[0, 0] == 3.5 and math.isnan(X[1, 0])
    assert X[0, 1] == 1.0 and math.isnan(X[1, 1])
    rows = schema.encode_rows([{"n": 3.5, "c": "y"}, {"n": None, "c": "never-seen"}])
    np.testing.assert_array_equal(np.isnan(X), np.isnan(rows))
    np.testing.assert_array_equal(np.nan_to_num(X), np.nan_to_num(rows))
    assert FeatureSchema.from_dict(schema.to_dict()) == schema


def test_feature_of_unusable_dtype_is_refused() -> None:
    df = pd.DataFrame({"ts": pd.date_range("2013-01-01", periods=3)})
    with pytest.raises(SchemaError, match="feature 'ts' has dtype"):
        FeatureSchema.infer(df, ["ts"])


def test_metrics() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = score(["mae", "rmse", "r2"], y, y + 1)
    assert m == {"mae": 1.0, "rmse": 1.0, "r2": pytest.approx(0.2)}
    c = score(
        ["auc", "accuracy", "logloss"], np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.8, 0.3])
    )
    assert c["auc"] == 1.0 and c["accuracy"] == 1.0 and c["logloss"] is not None
    assert score(["auc"], np.array([1, 1]), np.array([0.5, 0.5])) == {"auc": None}
    assert score(["mae"], np.array([]), np.array([])) == {"mae": None}
