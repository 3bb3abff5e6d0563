"""The same run on PostgreSQL metadata and on a local Ray cluster; the CLI end to end; a custom
train function whose package loads where its module is not importable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kiln.registry import Predictor
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import open_stores

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_run_on_postgresql_metadata(make_config, pg_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".kiln", db_url=pg_url)
    stores = open_stores(settings, upgrade=True)
    try:
        loaded = make_config()
        result = Runner(settings, stores).run(loaded)
        again = Runner(settings, stores).run(loaded)
        assert (result.version, again.version) == (1, 2)
        with stores.metadata.unit_of_work() as uow:
            tasks = uow.tasks.for_run(result.run_id)
            assert len(tasks) == 4 and all(t.status == "succeeded" for t in tasks)
            assert uow.runs.get(result.run_id).status == "succeeded"
    finally:
        stores.close()


@pytest.mark.ray
def test_run_on_a_local_ray_cluster(make_config, ray_available: None, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".kiln", executor="ray")
    stores = open_stores(settings, upgrade=True)
    try:
        result = Runner(settings, stores).run(make_config())
        assert set(result.manifest["models"]) == {"EWR", "JFK", "LGA"}
        with stores.metadata.unit_of_work() as uow:
            tasks = uow.tasks.for_run(result.run_id)
        assert all(t.cpu_seconds > 0 and t.peak_memory_bytes > 0 for t in tasks)
        predictor = Predictor.load(stores.content, result.manifest_digest, label="ray v1")
        assert predictor.segments == ["EWR", "JFK", "LGA"]
    finally:
        stores.close()


CUSTOM = """
import numpy as np
from lightgbm import LGBMRegressor


class Clipped:
    def __init__(self, model):
        self.model = model

    def predict(self, X):
        return np.clip(self.model.booster_.predict(X), -60, 600)


def train(X, y, context):
    model = LGBMRegressor(n_estimators=15, n_jobs=context.threads, verbose=-1)
    model.fit(X.to_numpy(), y.to_numpy(), categorical_feature=[
        X.columns.get_loc(c) for c in context.categorical])
    return Clipped(model)
"""

LOAD_ELSEWHERE = """
import sys
from kiln.registry import Predictor
from kiln.stores import open_stores
from kiln.settings import Settings
stores = open_stores(Settings(home=sys.argv[1]))
p = Predictor.load(stores.content, sys.argv[2], label="custom v1")
row = {"origin": "JFK", "dest": "LAX", "carrier": "AA", "hour": 9, "day_of_week": 3,
       "distance": 2475.0, "temp": 30.0, "wind_speed": 10.0, "precip": 0.0, "visib": 10.0}
out = p.predict([row])
print(out.model[0], float(out.values[0]))
"""


def test_custom_model_class_loads_without_its_module(make_config, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "mytrain.py").write_text(textwrap.dedent(CUSTOM))
    loaded = make_config(model={"estimator": None, "params": None, "train": "mytrain:train"})
    moved = project / "kiln.yaml"
    loaded.path.rename(moved)
    from kiln.config import load_config

    settings = Settings(home=tmp_path / ".kiln")
    stores = open_stores(settings, upgrade=True)
    result = Runner(settings, stores).run(load_config(moved))
    stores.close()
    (project / "mytrain.py").unlink()  # the serving side has no copy of the module
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", LOAD_ELSEWHERE, str(settings.home), result.manifest_digest],
        cwd=elsewhere, capture_output=True, text=True, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    model, value = out.stdout.split()
    assert model == "JFK" and -60 <= float(value) <= 600


def test_cli_end_to_end(make_config, cli, tmp_path: Path) -> None:
    loaded = make_config()
    home = str(tmp_path / ".kiln")
    ok = cli("validate", str(loaded.path), cwd=tmp_path)
    assert ok.returncode == 0 and "flights-test" in ok.stdout

    run = cli("--home", home, "run", str(loaded.path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "registered flights-test v1" in run.stdout
    for seg in ("EWR", "JFK", "LGA", "(fallback)"):
        assert seg in run.stdout
    assert "train" in run.stderr and "4/4" in run.stderr  # the progress bar

    listed = cli("--home", home, "runs", "list", cwd=tmp_path)
    run_id = listed.stdout.split("\n")[3].split()[1]
    shown = cli("--home", home, "runs", "show", run_id, cwd=tmp_path)
    assert shown.returncode == 0 and "succeeded" in shown.stdout and "LGA" in shown.stdout
    models = cli("--home", home, "models", "list", cwd=tmp_path)
    assert "v1" in models.stdout and "candidate" in models.stdout
    show = cli("--home", home, "models", "show", "flights-test", "1", "--verify", cwd=tmp_path)
    assert show.returncode == 0 and "matches its SHA-256" in show.stdout
    assert "config_digest" in show.stdout
    for metric in ("mae* (fallback)", "rmse (fallback)", "r2 (fallback)"):  # every metric
        assert metric in show.stdout, show.stdout

    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([
        {"origin": "JFK", "dest": "LAX", "carrier": "AA", "hour": 9, "day_of_week": 3,
         "distance": 2475.0, "temp": 30.0, "wind_speed": 10.0, "precip": 0.0, "visib": 10.0},
        {"origin": "SFO", "dest": "LAX", "carrier": "AA", "hour": 9, "day_of_week": 3,
         "distance": 300.0, "temp": 60.0, "wind_speed": 5.0, "precip": 0.0, "visib": 10.0},
    ]))  # fmt: skip
    out_csv = tmp_path / "out.csv"
    pred = cli("--home", home, "predict", "flights-test", "--input", str(rows), "--version",
               "1", "--output", str(out_csv), cwd=tmp_path)  # fmt: skip
    assert pred.returncode == 0, pred.stderr
    lines = out_csv.read_text().splitlines()
    assert lines[0].endswith(",prediction,model,fallback,version,unseen")
    assert lines[1].endswith(",JFK,False,1,") and lines[2].endswith(",__fallback__,True,1,origin")


def test_cli_errors_have_exit_codes_and_no_traceback(make_config, cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nowner: y\nfeaturs: [a]\n")
    r = cli("validate", str(bad), cwd=tmp_path)
    assert (
        r.returncode == 2 and "did you mean 'features'" in r.stderr and "Traceback" not in r.stderr
    )
    r = cli("--home", str(tmp_path / "h"), "runs", "show", "nope", cwd=tmp_path)
    assert r.returncode == 7 and "kiln db upgrade" in r.stderr  # a fresh home has no tables yet
    assert cli("--home", str(tmp_path / "h"), "db", "upgrade", cwd=tmp_path).returncode == 0
    r = cli("--home", str(tmp_path / "h"), "runs", "show", "nope", cwd=tmp_path)
    assert r.returncode == 6 and "no run 'nope'" in r.stderr
    r = cli("--db", "postgresql://postgres@127.0.0.1:1/x", "runs", "list", cwd=tmp_path)
    assert r.returncode == 7 and "cannot reach" in r.stderr and "Traceback" not in r.stderr
    loaded = make_config(data={"query": "SELECT * FROM flights WHERE month = 13"})
    r = cli("--home", str(tmp_path / "h"), "run", str(loaded.path), cwd=tmp_path)
    assert r.returncode == 3 and "no rows" in r.stderr and "Traceback" not in r.stderr
    r = cli("--home", str(tmp_path / "h"), "--debug", "runs", "show", "nope", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_init_scaffold_validates_and_schema_prints(cli, tmp_path: Path) -> None:
    r = cli("init", "proj", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "proj" / "kiln.yaml").exists() and (tmp_path / "proj" / "train.py").exists()
    v = cli("validate", "proj/kiln.yaml", cwd=tmp_path)  # its data.parquet is to be written
    assert v.returncode == 3 and "kiln.yaml:7:11: data.source:" in v.stderr
    assert "data.parquet does not exist" in v.stderr and "Traceback" not in v.stderr
    again = cli("init", "proj", cwd=tmp_path)
    assert again.returncode == 1 and "exists already" in again.stderr
    s = cli("schema", cwd=tmp_path)
    assert json.loads(s.stdout)["title"] == "kiln.yaml"


def test_capture_query_command(cli, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from kiln.stores import CaptureRecord, CaptureWriter

    home = tmp_path / ".kiln"
    writer = CaptureWriter(str(home / "artifacts"), writer_id="test")
    for i in range(7):
        writer.offer(
            CaptureRecord(
                request_id=f"r{i}",
                ts=datetime.now(UTC),
                pipeline="flights-test",
                version=1,
                stage="production",
                segment="JFK",
                model="JFK",
                fallback=False,
                features={"hour": i},
                prediction=float(i),
                error=None,
                latency_ms=0.5,
            )
        )
    writer.close()
    r = cli("--home", str(home), "capture", "query",
            "SELECT pipeline, count(*) AS n FROM captures GROUP BY 1", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "flights-test" in r.stdout and " 7 " in r.stdout
    bad = cli("--home", str(home), "capture", "query", "SELECT nope FROM captures", cwd=tmp_path)
    assert bad.returncode == 7 and "nope" in bad.stderr and "Traceback" not in bad.stderr
