"""A registry home for the version and run pages, built once per test process from two REAL
runs on the real flights (tests/conftest.py BASE) and copied for each test:

- v1: BASE, promoted to production, which then answers 60 captured requests (real answers)
  whose ids hold HTML (``<i>req</i>-N``) and that carry no ``dep_delay``;
- v2: also needs ``dep_delay``, and its train function fails on segment JFK with an error that
  holds a script tag; its real gates block it: champion/challenger (JFK lost), replay (every
  captured request lacks dep_delay), feature availability (dep_delay never sent), data quality
  (too many rows answered by the fallback).
"""

from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from kiln.config import load_config
from kiln.registry import Stages
from kiln.registry.version import Version
from kiln.release.controller import Release
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import CaptureRecord, CaptureWriter, open_stores
from tests.conftest import BASE, merge

PIPELINE: str = BASE["name"]
OWNER = "olga"
BROKEN = "JFK"
SCRIPT = "<script>alert('jfk')</script>"
REQUEST_PREFIX = "<i>req</i>"
LOG_MARK = "<b>training</b>"

TRAIN = f'''
from lightgbm import LGBMRegressor


def train(X, y, context):
    print("{LOG_MARK}", context.segment)
    if context.segment == "{BROKEN}":
        raise ValueError("{BROKEN} data is broken today {SCRIPT}")
    return LGBMRegressor(n_estimators=5, verbose=-1).fit(X.to_numpy(), y.to_numpy())
'''

_built: dict[str, Path] = {}


def version_home(base: Path, warehouse: Path) -> Path:
    """The template home (built on first use in this process under ``base``)."""
    if "home" not in _built:
        _built["home"] = _build(base, warehouse)
    return _built["home"]


def copy_home(template: Path, to: Path) -> Path:
    shutil.copytree(template, to)
    return to


def _build(base: Path, warehouse: Path) -> Path:
    settings = Settings(home=base / "home")
    stores = open_stores(settings, upgrade=True)
    (base / "badtrain.py").write_text(textwrap.dedent(TRAIN))
    common = {"owner": OWNER, "data": {"source": str(warehouse)}}
    v2_changes = {
        "features": [*BASE["features"], "dep_delay"],
        "model": {"estimator": None, "params": None, "train": "badtrain:train"},
    }
    try:
        runner = Runner(settings, stores)
        configs = []
        for n, changes in ((1, {}), (2, v2_changes)):
            path = base / f"kiln.v{n}.yaml"
            path.write_text(yaml.safe_dump(merge(merge(BASE, common), changes), sort_keys=False))
            configs.append(path)
        v1 = runner.run(load_config(configs[0])).version
        Stages(stores.metadata).promote(PIPELINE, v1, actor="tests")
        with stores.metadata.read() as uow:
            _serve(settings, Version(stores, uow.versions.get(PIPELINE, v1)), 60)
        v2 = runner.run(load_config(configs[1])).version
        decision = Release(settings, stores).after_run(PIPELINE, v2)
        assert decision.outcome == "blocked", decision.message
    finally:
        stores.close()
    return settings.home


def _serve(settings: Settings, version: Version, n: int) -> None:
    frame = version.holdout[version.features].head(n)
    rows: list[dict[str, Any]] = frame.astype(object).where(frame.notna(), None).to_dict("records")
    prediction = version.predictor.predict(rows)
    now = datetime.now(UTC)
    with CaptureWriter(settings.artifact_root, writer_id="ui-tests") as writer:
        for i, row in enumerate(rows):
            writer.offer(
                CaptureRecord(
                    request_id=f"{REQUEST_PREFIX}-{i}",
                    ts=now,
                    pipeline=PIPELINE,
                    version=version.number,
                    stage="production",
                    segment=row.get("origin"),
                    model=prediction.model[i],
                    fallback=bool(prediction.fallback[i]),
                    features=row,
                    prediction=float(prediction.values[i]),
                    error=None,
                    latency_ms=2.0,
                )
            )
