"""Multiclass classification through the real runner: a small synthetic 3-class dataset (fast)
and the real flights (a 3-class delay label derived in the query)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pandas as pd
import pytest

from kiln.config import load_config
from kiln.errors import SchemaError, TrainingError
from kiln.pipeline import FALLBACK
from kiln.registry import Predictor
from kiln.runs import Runner
from kiln.runs.data import prepare
from kiln.runs.training import TrainSpec, TrainTask, train_segment
from kiln.settings import Settings
from kiln.stores import Stores, open_stores
from tests.multiclass_support import CLASSES, load, write_rows

ROWS = [
    {"x": 2.0, "z": 0.0, "kind": "p", "seg": "a"},
    {"x": -2.0, "z": 0.5, "kind": "q", "seg": "b"},
    {"x": 0.1, "z": 0.0, "kind": "r", "seg": "nowhere"},
]

NAN_TRAIN = '''
import numpy as np
from lightgbm import LGBMClassifier


class Broken:
    """Segment b's model: NaN for every class of a row with x > 0."""

    def __init__(self, model):
        self.model = model

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)

    def predict_proba(self, X):
        p = self.model.predict_proba(X)
        p[np.asarray(X)[:, 0] > 0] = np.nan
        return p


def train(X, y, context):
    assert context.classes == ["early", "late", "very_late"]
    model = LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(X.to_numpy(), y)
    return Broken(model) if context.segment == "b" else model
'''

NO_PROBA_TRAIN = """
from sklearn.linear_model import LinearRegression


def train(X, y, context):
    return LinearRegression().fit(X.to_numpy(), y)
"""


def manifest_of(stores: Stores, digest: str) -> dict:
    return orjson.loads(stores.content.get(digest, what="manifest"))


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "rows.parquet")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Version 1 of the 3-class pipeline, trained once for this module."""
    folder = tmp_path_factory.mktemp("multiclass")
    settings = Settings(home=folder / ".kiln")
    stores = open_stores(settings, upgrade=True)
    try:
        result = Runner(settings, stores).run(load(folder, write_rows(folder / "rows.parquet")))
        yield SimpleNamespace(folder=folder, settings=settings, stores=stores, result=result)
    finally:
        stores.close()


def test_three_labels_train_evaluate_and_predict_probabilities(trained: SimpleNamespace) -> None:
    stores, result = trained.stores, trained.result
    m = manifest_of(stores, result.manifest_digest)
    assert m["task"] == "classification" and m["classes"] == CLASSES
    assert set(m["models"]) == {"a", "b"}
    metrics = m["metrics"]
    assert metrics["primary"] == "logloss"
    assert set(metrics["overall"]) == {"logloss", "accuracy", "f1_macro"}
    assert 0 < metrics["overall"]["logloss"] < np.log(3)  # better than guessing
    assert metrics["overall"]["accuracy"] > 0.6 and metrics["overall"]["f1_macro"] > 0.5
    assert set(m["models"]["a"]["metrics"]) == {"logloss", "accuracy", "f1_macro"}
    shares = m["reference_profile"]["__target__"]["classes"]
    assert set(shares) == set(CLASSES) and sum(shares.values()) == pytest.approx(1)

    predictor = Predictor.load(stores.content, result.manifest_digest, label="v1")
    p = predictor.predict(ROWS)
    assert p.probabilities is not None and p.probabilities.shape == (3, 3)
    np.testing.assert_allclose(p.probabilities.sum(axis=1), 1.0)
    assert p.classes == CLASSES and p.labels()[:2] == ["very_late", "early"]
    np.testing.assert_allclose(p.values, p.probabilities.max(axis=1))
    assert p.model == ["a", "b", FALLBACK] and p.fallback.tolist() == [False, False, True]
    one = predictor.predict(ROWS[:1])  # the one-row path answers as the batch does
    np.testing.assert_allclose(one.probabilities, p.probabilities[:1])
    frame = predictor.predict(pd.DataFrame(ROWS))
    np.testing.assert_allclose(frame.probabilities, p.probabilities)


def test_kiln_predict_writes_the_label_and_each_class_probability(
    trained: SimpleNamespace, cli
) -> None:
    rows = trained.folder / "rows.json"
    rows.write_text(orjson.dumps(ROWS).decode())
    out_csv = trained.folder / "out.csv"
    home = str(trained.settings.home)
    pred = cli("--home", home, "predict", "classes", "--input", str(rows), "--version", "1",
               "--output", str(out_csv), cwd=trained.folder)  # fmt: skip
    assert pred.returncode == 0, pred.stderr
    got = pd.read_csv(out_csv)
    expected = Predictor.load(
        trained.stores.content, trained.result.manifest_digest, label="v1"
    ).predict(ROWS)
    assert got["prediction"].tolist() == expected.labels()
    assert got["model"].tolist() == expected.model
    columns = [f"probability_{c}" for c in CLASSES]
    np.testing.assert_allclose(got[columns].to_numpy(), expected.probabilities)
    show = cli("--home", home, "models", "show", "classes", "1", cwd=trained.folder)
    assert show.returncode == 0, show.stderr
    assert "classes of status: early, late, very_late" in show.stdout


def test_a_segment_model_with_non_finite_probabilities_falls_back_row_by_row(
    tmp_path: Path, rows: Path, runner: Runner, stores: Stores
) -> None:
    (tmp_path / "nantrain.py").write_text(NAN_TRAIN)
    custom = {"estimator": None, "params": None, "train": "nantrain:train"}
    loaded = load(tmp_path, rows, model=custom)
    result = runner.run(loaded)
    predictor = Predictor.load(stores.content, result.manifest_digest, label="v1")
    batch = [{"x": x, "z": 0.0, "kind": "p", "seg": "b"} for x in (-1.0, 1.0, -0.5, 2.0)]
    p = predictor.predict(batch)
    assert p.model == ["b", FALLBACK, "b", FALLBACK] and p.errors == 1
    assert np.isfinite(p.probabilities).all()
    np.testing.assert_allclose(p.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    single = predictor.predict(batch[1:2])
    assert single.model == [FALLBACK] and single.errors == 1


def test_a_multiclass_model_without_predict_proba_fails_its_task_with_the_fix(
    tmp_path: Path,
) -> None:
    (tmp_path / "noproba.py").write_text(NO_PROBA_TRAIN)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 2)), (np.arange(60) % 3).astype(np.float64)
    spec = TrainSpec(
        task="classification", features=["x", "z"], categorical=[], metrics=["logloss"],
        base_dir=str(tmp_path), where="kiln.yaml:12:3", train="noproba:train", classes=CLASSES,
    )  # fmt: skip
    with pytest.raises(TrainingError) as e:
        train_segment(TrainTask("a", spec, X[:40], y[:40], X[40:], y[40:]))
    assert "segment 'a'" in str(e.value) and "predict_proba" in str(e.value)
    assert "context.classes" in str(e.value.hint)


def test_two_text_labels_are_binary_with_their_classes_recorded(
    tmp_path: Path, rows: Path, runner: Runner, stores: Stores
) -> None:
    df = pd.read_parquet(rows)
    df["status"] = np.where(df["status"] == "early", "on_time", "delayed")
    df.to_parquet(rows)
    result = runner.run(load(tmp_path, rows))
    m = manifest_of(stores, result.manifest_digest)
    assert m["classes"] == ["delayed", "on_time"]  # P(on_time), the later label, is answered
    assert m["metrics"]["primary"] == "auc" and set(m["metrics"]["overall"]) == {
        "auc",
        "logloss",
        "accuracy",
    }
    predictor = Predictor.load(stores.content, result.manifest_digest, label="v1")
    p = predictor.predict([{"x": -2.0, "z": 0.0, "kind": "p", "seg": "a"}])
    assert p.probabilities is None and p.values.shape == (1,) and p.values[0] > 0.5


def _prepare(tmp_path: Path, rows: Path, target: pd.Series, **changes: object):
    df = pd.read_parquet(rows).assign(status=target)
    return prepare(df, load(tmp_path, rows, **changes))


def test_the_target_decides_binary_or_multiclass(tmp_path: Path, rows: Path) -> None:
    n = len(pd.read_parquet(rows))
    cycle = np.arange(n) % 3
    numbers = _prepare(tmp_path, rows, pd.Series(cycle + 1))  # 1, 2, 3: three classes
    assert numbers.classes == ["1", "2", "3"] and numbers.multiclass
    assert numbers.y[:3].tolist() == [0.0, 1.0, 2.0]
    tens = _prepare(tmp_path, rows, pd.Series((cycle + 1) * 5))  # sorted as numbers
    assert tens.classes == ["5", "10", "15"]
    zero_one = _prepare(tmp_path, rows, pd.Series(cycle % 2))
    assert zero_one.classes is None and not zero_one.multiclass  # binary exactly as before
    booleans = _prepare(tmp_path, rows, pd.Series(cycle == 0))
    assert booleans.classes is None and booleans.y[:3].tolist() == [1.0, 0.0, 0.0]
    python_bools = _prepare(tmp_path, rows, pd.Series(list(cycle == 0), dtype=object))
    assert python_bools.classes is None and python_bools.y[:3].tolist() == [1.0, 0.0, 0.0]
    texts = _prepare(tmp_path, rows, pd.Series((cycle % 2).astype(str)))  # "0" / "1": labels
    assert texts.classes == ["0", "1"] and not texts.multiclass


def test_a_target_with_one_label_or_too_many_names_the_place(tmp_path: Path, rows: Path) -> None:
    n = len(pd.read_parquet(rows))
    with pytest.raises(SchemaError) as one:
        _prepare(tmp_path, rows, pd.Series(["late"] * n))
    assert "kiln.yaml" in str(one.value) and "one label" in str(one.value)
    with pytest.raises(SchemaError) as many:
        _prepare(tmp_path, rows, pd.Series(np.arange(n) * 1.5))
    assert "distinct labels" in str(many.value) and "regression" in str(many.value.hint)


@pytest.mark.slow
def test_a_three_class_delay_label_on_the_flights(
    make_config, runner: Runner, stores: Stores
) -> None:
    query = (
        "SELECT *, CASE WHEN arr_delay <= 0 THEN 'early' WHEN arr_delay <= 30 THEN 'late'"
        " ELSE 'very_late' END AS delay_class FROM flights WHERE month IN (1, 2)"
        " AND arr_delay IS NOT NULL"
    )
    loaded = make_config(
        data={"query": query},
        target={"column": "delay_class", "task": "classification"},
        model={"estimator": "lightgbm.LGBMClassifier"},
        evaluation={"metrics": None},
    )
    result = runner.run(loaded)
    m = manifest_of(stores, result.manifest_digest)
    assert m["classes"] == CLASSES and set(m["models"]) == {"EWR", "JFK", "LGA"}
    overall = m["metrics"]["overall"]
    assert m["metrics"]["primary"] == "logloss" and overall["logloss"] < np.log(3)
    predictor = Predictor.load(stores.content, result.manifest_digest, label="v1")
    row = {f: None for f in loaded.config.features} | {"origin": "JFK", "carrier": "B6"}
    p = predictor.predict([row | {"hour": 7, "distance": 1000}])
    assert p.model == ["JFK"] and p.probabilities.shape == (1, 3)
    assert load_config(loaded.path).config.target.task == "classification"


def test_the_flights_example_of_a_delay_class_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "flights" / "kiln.classes.yaml"
    cfg = load_config(example).config
    assert cfg.target.task == "classification" and cfg.model.estimator.endswith("Classifier")
    assert "delay_class" in cfg.data.query and cfg.evaluation.metrics is None
