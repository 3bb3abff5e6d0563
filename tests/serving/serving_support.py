"""Helpers of the serving tests: real server processes, the small pipeline, stage changes.

``Server`` runs ``python -m kiln.serving`` on a free port; ``wait_ready`` polls ``/readyz``;
``stop`` sends SIGTERM and waits, so the captures are flushed when it returns.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson

from kiln.registry import Predictor, Stages
from kiln.settings import Settings
from kiln.stores import Stores, open_stores
from tests.conftest import register_changed

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = "flights-serve"
ADMIN = "admin-secret"
PREDICT = "predict-secret"
FEATURES = ["origin", "dest", "carrier", "hour", "day_of_week", "distance", "temp"]
FEATURES += ["wind_speed", "precip", "visib"]


def config(warehouse: Path, *, trees: int, sample_rate: float) -> dict[str, Any]:
    return {
        "name": PIPELINE,
        "owner": "tests@example.com",
        "data": {
            "source": str(warehouse),
            "query": "SELECT * FROM flights WHERE month IN (1, 2)",
            "time_column": "time_hour",
        },
        "target": {"column": "arr_delay", "task": "regression"},
        "features": FEATURES,
        "segments": {"column": "origin", "values": "auto", "min_rows": 100},
        "model": {
            "estimator": "lightgbm.LGBMRegressor",
            "params": {"n_estimators": trees, "num_leaves": 15},
        },
        "evaluation": {"split": {"holdout_start": "2013-02-15"}, "metrics": ["mae"]},
        "resources": {"cpus": 2},
        "capture": {"sample_rate": sample_rate},
    }


@dataclass(frozen=True)
class Trained:
    home: Path
    """Template home: v1 (capture 50%) and v2 (other trees, capture 100%), both candidates."""

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.home, to)
        return to


def set_stage(home: Path, version: int, stage: str) -> None:
    stores = open_stores(Settings(home=home))
    try:
        stages = Stages(stores.metadata)
        if stage == "production":
            stages.promote(PIPELINE, version, actor="tests")
        else:
            stages.set_shadow(PIPELINE, version, actor="tests")
    finally:
        stores.close()


def set_canary(home: Path, version: int, share: float) -> None:
    stores = open_stores(Settings(home=home))
    try:
        Stages(stores.metadata).set_canary(PIPELINE, version, share, actor="tests")
    finally:
        stores.close()


def register_copy(home: Path, version: int) -> int:
    """A new candidate version with the same package and config as ``version``."""
    stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.unit_of_work() as uow:
            record = uow.versions.get(PIPELINE, version)
            run = uow.runs.get(record.run_id)
            copy = uow.runs.create(
                PIPELINE, "manual", run.config_text, run.config_digest, run.config_path, "h", 1
            )
            return uow.versions.register(PIPELINE, copy.id, record.manifest_digest, {}, {}).version
    finally:
        stores.close()


def register_with(home: Path, version: int, **manifest: Any) -> int:
    """A new candidate version: the package of ``version`` with ``manifest`` keys changed
    (e.g. ``serving={"unseen_categories": "reject"}``), stored under its own digest."""
    return register_changed(home, PIPELINE, version, manifest)


def tamper(home: Path, version: int, segment: str = "JFK") -> str:
    """Flip one byte of the segment model of ``version``; returns the artifact's digest."""
    stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.unit_of_work() as uow:
            digest = uow.versions.get(PIPELINE, version).manifest_digest
        manifest = orjson.loads(stores.content.get(digest, what=f"v{version}"))
        artifact: str = manifest["models"][segment]["sha256"]
        path = Path(Settings(home=home).artifact_root) / stores.content.key_of(artifact)
    finally:
        stores.close()
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    return artifact


def predictor(home: Path, version: int) -> Predictor:
    stores: Stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.unit_of_work() as uow:
            digest = uow.versions.get(PIPELINE, version).manifest_digest
        return Predictor.load(stores.content, digest, label=f"{PIPELINE} v{version}")
    finally:
        stores.close()


def read_rows(warehouse: Path) -> list[dict[str, Any]]:
    """Real rows of March 2013 (after the training months), as JSON-ready dicts."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        df = con.execute(
            f"SELECT {', '.join(FEATURES)} FROM flights WHERE month = 3"
            " ORDER BY flight_id LIMIT 400"
        ).df()
    rows = []
    for record in df.to_dict("records"):
        row = {}
        for k, v in record.items():
            value = v.item() if hasattr(v, "item") else v
            row[k] = None if isinstance(value, float) and math.isnan(value) else value
        rows.append(row)
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m kiln.serving`` in a child process, on a free port."""

    def __init__(
        self,
        home: Path,
        *,
        workers: int = 1,
        admin_token: str | None = ADMIN,
        predict_token: str | None = None,
        reload_seconds: float = 0.3,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "KILN_RELOAD_SECONDS": str(reload_seconds)}
        env.update(extra_env or {})
        for key, value in (
            ("KILN_ADMIN_TOKEN", admin_token),
            ("KILN_PREDICT_TOKEN", predict_token),
        ):
            env.pop(key, None)
            if value is not None:
                env[key] = value
        self.log_path = home.parent / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiln.serving", "--home", str(home), "--port", str(self.port),
             "--workers", str(workers)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.workers = workers

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited early:\n{self.log()}")
            try:
                # every worker must be ready: ask on fresh connections a few times
                codes = {
                    httpx.get(f"{self.url}/readyz").status_code for _ in range(4 * self.workers)
                }
                if codes == {200}:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server was not ready in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the server ignored SIGTERM:\n{self.log()}") from None
        self._log.close()
        return self.proc.returncode


def wait_for(condition: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
