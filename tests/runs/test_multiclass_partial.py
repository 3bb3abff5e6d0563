"""A multiclass pipeline retrained one segment at a time (``kiln run --segment``) and resumed:
production's models are scored with one probability per class, on the run's metrics, also for
a segment without holdout rows; a change of classes is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kiln.errors import SchemaError, TrainingError
from kiln.pipeline import FALLBACK
from kiln.runs import Runner
from kiln.runs.options import RunOptions
from kiln.stores import Stores
from tests.multiclass_support import CLASSES, load, write_rows

MULTICLASS_METRICS = {"logloss", "accuracy", "f1_macro"}

FAIL_ONCE = """
from pathlib import Path

from lightgbm import LGBMClassifier


def train(X, y, context):
    if context.segment == "b" and (Path(__file__).parent / "fail-b").exists():
        raise RuntimeError("segment b fails while fail-b exists")
    return LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(X.to_numpy(), y)
"""


def rows_with_c(path: Path) -> Path:
    """The 3-class rows plus segment c: 150 rows, all in January, so before the holdout (it
    trains, and has no holdout row)."""
    write_rows(path)
    df = pd.read_parquet(path)
    c = df.iloc[:150].copy()
    c["seg"] = "c"
    c["ts"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.linspace(0, 30, 150), "D")
    pd.concat([df, c], ignore_index=True).to_parquet(path)
    return path


def promote(stores: Stores, version: int) -> None:
    with stores.metadata.unit_of_work() as uow:
        uow.versions.set_stage("classes", version, "production")


def test_one_segment_of_a_multiclass_pipeline_is_retrained(
    tmp_path: Path, runner: Runner, stores: Stores
) -> None:
    rows = rows_with_c(tmp_path / "rows.parquet")
    loaded = load(tmp_path, rows)
    first = runner.run(loaded)
    base = first.manifest
    assert base["models"]["c"]["rows_holdout"] == 0
    promote(stores, first.version)

    result = runner.run(loaded, options=RunOptions(segments=("a",)))

    m = result.manifest
    assert m["lineage"]["partial"] == {"retrained": ["a"], "base_version": first.version}
    assert m["classes"] == CLASSES and m["metrics"]["primary"] == "logloss"
    for seg in ("b", "c"):  # production's models, scored on the same rows as production's run
        assert m["models"][seg]["from_version"] == first.version
        assert set(m["models"][seg]["metrics"]) == MULTICLASS_METRICS
        assert m["models"][seg]["metrics"] == pytest.approx(base["models"][seg]["metrics"])
    assert m["models"]["c"]["rows_holdout"] == 0
    assert m["fallback"]["metrics"] == pytest.approx(base["fallback"]["metrics"])
    assert set(m["metrics"]["overall"]) == MULTICLASS_METRICS
    assert 0 < m["metrics"]["overall"]["logloss"] < np.log(3)


def test_a_partial_run_refuses_a_change_of_classes(
    tmp_path: Path, runner: Runner, stores: Stores
) -> None:
    rows = write_rows(tmp_path / "rows.parquet")
    first = runner.run(load(tmp_path, rows))
    promote(stores, first.version)
    df = pd.read_parquet(rows)
    df.loc[df["status"] == "very_late", "status"] = "cancelled"  # a new label, one gone
    df.to_parquet(rows)

    with pytest.raises(SchemaError) as e:
        runner.run(load(tmp_path, rows), options=RunOptions(segments=("a",)))

    text = str(e.value)
    assert "early, late, very_late" in text and "cancelled, early, late" in text
    assert "kiln.yaml" in text and f"v{first.version}" in text
    assert "without --segment" in str(e.value.hint)


def test_a_multiclass_run_resumes_with_a_segment_without_holdout_rows(
    tmp_path: Path, runner: Runner, stores: Stores
) -> None:
    (tmp_path / "failonce.py").write_text(FAIL_ONCE)
    (tmp_path / "fail-b").write_text("")
    rows = rows_with_c(tmp_path / "rows.parquet")
    custom = {"estimator": None, "params": None, "train": "failonce:train"}
    loaded = load(tmp_path, rows, model=custom, segments={"on_segment_failure": "fail"})
    with pytest.raises(TrainingError, match="segment b fails"):
        runner.run(loaded)
    with stores.metadata.unit_of_work() as uow:
        (run,) = uow.runs.list("classes")
    (tmp_path / "fail-b").unlink()

    result = runner.resume(run.id)

    assert result.reused_tasks == 3  # a, c (no holdout rows) and the fallback
    m = result.manifest
    assert set(m["models"]) == {"a", "b", "c"} and m["models"]["c"]["rows_holdout"] == 0
    assert set(m["metrics"]["overall"]) == MULTICLASS_METRICS
    assert FALLBACK not in m["routed_to_fallback"]
