"""Checks before any data is read: estimator params of the wrong type are refused with the
file:line of the value, using the estimator's own declared types (no fitting, no data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.config import parse_config
from kiln.errors import ConfigError
from kiln.runs.preflight import check_importable

CONFIG = """\
name: p
owner: ds@example.com
data: {source: data.csv, time_column: ts}
target: y
features: [a, b]
model:
  estimator: ESTIMATOR
  params:
PARAMS
"""


def check(tmp_path: Path, estimator: str, params: str) -> None:
    text = CONFIG.replace("ESTIMATOR", estimator).replace("PARAMS", params)
    check_importable(parse_config(text, tmp_path / "kiln.yaml"))


def refused(tmp_path: Path, estimator: str, params: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check(tmp_path, estimator, params)
    return info.value.problems or [info.value.message]


def test_lightgbm_named_params_are_checked_against_its_type_hints(tmp_path: Path) -> None:
    ps = refused(
        tmp_path, "lightgbm.LGBMRegressor", "    n_estimators: {a: 1}\n    learning_rate: fast"
    )
    assert len(ps) == 2
    assert ps[0].endswith(
        "kiln.yaml:9:19: model.params.n_estimators: expected an integer, got {'a': 1}"
    )
    assert ps[1].endswith(
        "kiln.yaml:10:20: model.params.learning_rate: expected a number, got 'fast'"
    )


def test_lightgbm_booster_params_and_aliases_are_checked(tmp_path: Path) -> None:
    [p] = refused(tmp_path, "lightgbm.LGBMRegressor", "    sub_feature: most\n    lambda_l1: 1")
    assert "model.params.sub_feature: expected a number, got 'most'" in p  # feature_fraction
    [p] = refused(tmp_path, "lightgbm.LGBMRegressor", "    extra_trees: 1")
    assert "model.params.extra_trees: expected true or false, got 1" in p
    [p] = refused(tmp_path, "lightgbm.LGBMRegressor", "    num_leaves: 31.5")
    assert "expected an integer, got 31.5" in p


def test_good_lightgbm_params_pass(tmp_path: Path) -> None:
    params = """\
    n_estimators: 50
    learning_rate: 0.05
    subsample: 1
    objective: l1
    random_state: 7
    class_weight: null
    feature_fraction: 0.8
    extra_trees: true
    metric: [l1, l2]
    n_jobs: null"""
    check(tmp_path, "lightgbm.LGBMRegressor", params)


def test_sklearn_params_are_checked_by_sklearn_constraints(tmp_path: Path) -> None:
    [p] = refused(tmp_path, "sklearn.ensemble.GradientBoostingRegressor", "    learning_rate: fast")
    assert "kiln.yaml:9:20: model.params.learning_rate: must be a float" in p
    assert "got 'fast'" in p
    [p] = refused(tmp_path, "sklearn.ensemble.RandomForestRegressor", "    n_estimators: 0")
    assert "model.params.n_estimators: must be an int in the range [1, inf), got 0" in p
    check(tmp_path, "sklearn.ensemble.RandomForestRegressor", "    n_estimators: 5")


def test_an_estimator_class_beside_the_config_is_checked_by_its_hints(tmp_path: Path) -> None:
    (tmp_path / "mymodel.py").write_text(
        "class Model:\n"
        "    def __init__(self, depth: int = 3, rate: float | None = None, name='m') -> None:\n"
        "        self.depth, self.rate, self.name = depth, rate, name\n"
    )
    [p] = refused(tmp_path, "mymodel.Model", "    depth: deep\n    rate: 0.1\n    name: [x]")
    assert "model.params.depth: expected an integer, got 'deep'" in p  # name has no hint
    check(tmp_path, "mymodel.Model", "    depth: 4\n    rate: null")
