"""Shared fixtures of the gate tests: real versions of a small flights pipeline, trained once per
session, and real traffic captured the way the server captures it.

- ``gate_home`` (session): a template home of pipeline ``flights-test`` (tests/conftest.py BASE:
  two winter months, small LightGBM models per origin) with four versions, v1 in production:
  ``GateHome.PRODUCTION`` (v1), ``HONEST`` (v2: retrained with more trees),
  ``NEEDS_DEP_DELAY`` (v3: also needs ``dep_delay``, which the captured requests lack) and
  ``OUT_OF_RANGE`` (v4: v2's model with a ``prediction_range`` of [-10, 10] minutes, which
  its answers break).
- ``gate_env`` (function): a private copy of that home (its own stores, stages and capture
  store): ``version(n)``, ``policy(**changes)``, ``context(policy)``, ``capture(...)``,
  ``set_shadow(n)``.
- ``traffic_rows`` (session): 400 real flights of March 2013 (after the training months),
  base features only, as JSON-ready dicts (what callers of v1 send).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pytest
import yaml

from kiln.config import load_config
from kiln.config.deploy import DeployConfig
from kiln.gates.base import GateContext
from kiln.registry import Stages
from kiln.registry.version import Version
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import CaptureRecord, CaptureWriter, Stores, open_stores
from tests.conftest import BASE, merge

PIPELINE: str = BASE["name"]
BASE_FEATURES: list[str] = list(BASE["features"])
NO_MODEL = "(none)"
"""The ``model`` the server captures for a request that got no answer."""


@dataclass(frozen=True)
class GateHome:
    """The template home trained once per session (copy it before changing anything)."""

    home: Path
    PRODUCTION: ClassVar[int] = 1
    HONEST: ClassVar[int] = 2
    NEEDS_DEP_DELAY: ClassVar[int] = 3
    OUT_OF_RANGE: ClassVar[int] = 4

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.home, to)
        return to


def gate_config(warehouse: Path, **changes: Any) -> dict[str, Any]:
    """tests/conftest.py BASE on ``warehouse``, with ``changes`` merged in (None removes)."""
    return merge(merge(BASE, {"data": {"source": str(warehouse)}}), changes)


@pytest.fixture(scope="session")
def gate_home(tmp_path_factory: pytest.TempPathFactory, warehouse: Path) -> GateHome:
    base = tmp_path_factory.mktemp("gates")
    settings = Settings(home=base / "home")
    stores = open_stores(settings, upgrade=True)
    variants: list[dict[str, Any]] = [
        {},
        {"model": {"params": {"n_estimators": 40}}},
        {"features": [*BASE_FEATURES, "dep_delay"]},
        {
            "model": {"params": {"n_estimators": 40}},
            "deploy": {"gates": {"data_quality": {"prediction_range": {"min": -10, "max": 10}}}},
        },
    ]
    try:
        runner = Runner(settings, stores)
        for number, changes in enumerate(variants, start=1):
            path = base / f"kiln.v{number}.yaml"
            path.write_text(yaml.safe_dump(gate_config(warehouse, **changes), sort_keys=False))
            assert runner.run(load_config(path)).version == number
        Stages(stores.metadata).promote(PIPELINE, GateHome.PRODUCTION, actor="tests")
    finally:
        stores.close()
    return GateHome(settings.home)


@pytest.fixture(scope="session")
def traffic_rows(warehouse: Path) -> list[dict[str, Any]]:
    """400 real flights of March 2013 (base features), as a caller of v1 sends them."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        df = con.execute(
            f"SELECT {', '.join(BASE_FEATURES)} FROM flights WHERE month = 3"
            " ORDER BY flight_id LIMIT 400"
        ).df()
    return [{str(k): _json_value(v) for k, v in r.items()} for r in df.to_dict("records")]


def _json_value(v: Any) -> Any:
    value = v.item() if hasattr(v, "item") else v
    return None if isinstance(value, float) and math.isnan(value) else value


class GateEnv:
    """A private copy of the template home: stores, versions, policies, contexts, captures."""

    def __init__(self, home: Path) -> None:
        self.settings = Settings(home=home)
        self.stores: Stores = open_stores(self.settings)
        self.capture_root = self.settings.artifact_root
        self._writers = 0

    def close(self) -> None:
        self.stores.close()

    def version(self, number: int) -> Version:
        with self.stores.metadata.unit_of_work() as uow:
            return Version(self.stores, uow.versions.get(PIPELINE, number))

    @staticmethod
    def policy(**changes: Any) -> DeployConfig:
        """A ``deploy:`` policy: the defaults with ``changes`` merged in, e.g.
        ``policy(gates={"replay": {"max_abs_diff": 5}}, shadow={"min_requests": 100})``."""
        return DeployConfig.model_validate(merge(DeployConfig().model_dump(), changes))

    def context(
        self, policy: DeployConfig | None = None, *, now: datetime | None = None
    ) -> GateContext:
        return GateContext(self.stores, self.capture_root, policy or DeployConfig(), now=now)

    def set_shadow(self, number: int) -> datetime:
        """Shadow version ``number`` (a deployment event, as ``kiln shadow`` writes); returns
        the event's time."""
        Stages(self.stores.metadata).set_shadow(PIPELINE, number, actor="tests")
        with self.stores.metadata.unit_of_work() as uow:
            return uow.deployments.list(PIPELINE, limit=1)[0].at

    def capture(
        self,
        version: Version,
        rows: Sequence[dict[str, Any]],
        *,
        stage: str = "production",
        ids: Sequence[str] | None = None,
        ts: datetime | None = None,
        latency_ms: float = 2.0,
        failing: Sequence[bool] | None = None,
        predictions: Sequence[float | None] | None = None,
    ) -> list[CaptureRecord]:
        """Capture ``rows`` answered by ``version`` as the server does (one record per row,
        the version's real answers from ``Predictor.predict(rows)``) and write them with a
        CaptureWriter; returns the records.

        ``ids`` default to ``req-<i>`` (a shadow copy uses production's ids); ``ts`` to now;
        ``failing[i]`` makes request i one the version failed (no prediction, an error);
        ``predictions`` replaces the answers (to build hand-checked differences).
        """
        prediction = version.predictor.predict(list(rows))
        start = ts or datetime.now(UTC)
        records = []
        for i, row in enumerate(rows):
            failed = bool(failing and failing[i])
            value = float(prediction.values[i]) if predictions is None else predictions[i]
            records.append(
                CaptureRecord(
                    request_id=ids[i] if ids is not None else f"req-{i}",
                    ts=start + timedelta(microseconds=i),
                    pipeline=PIPELINE,
                    version=version.number,
                    stage=stage,
                    segment=None if row.get("origin") is None else str(row["origin"]),
                    model=NO_MODEL if failed else prediction.model[i],
                    fallback=False if failed else bool(prediction.fallback[i]),
                    features=dict(row),
                    prediction=None if failed else value,
                    error="RuntimeError: the shadow model failed" if failed else None,
                    latency_ms=latency_ms,
                )
            )
        self._writers += 1
        with CaptureWriter(self.capture_root, writer_id=f"tests-{self._writers}") as writer:
            for record in records:
                writer.offer(record)
        assert writer.written == len(records), f"{writer.written} of {len(records)} written"
        return records


@pytest.fixture
def gate_env(gate_home: GateHome, tmp_path: Path) -> Iterator[GateEnv]:
    env = GateEnv(gate_home.copy(tmp_path / "home"))
    yield env
    env.close()
