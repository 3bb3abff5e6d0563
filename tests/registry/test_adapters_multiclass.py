"""``predict_fn`` of a multiclass classifier: one probability per class, in index order, on the
LightGBM fast path too, and widened for a model that saw only some of the classes."""

from __future__ import annotations

import numpy as np
import pytest
from lightgbm import LGBMClassifier
from sklearn.linear_model import LogisticRegression

from kiln.registry.adapters import predict_fn

NAMES = ["a", "b"]


def _data(classes: tuple[int, ...], n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2))
    y = np.asarray(classes, dtype=np.float64)[np.digitize(X[:, 0], [-0.5, 0.5]) % len(classes)]
    return X, y


def test_lightgbm_multiclass_single_rows_equal_the_batch() -> None:
    X, y = _data((0, 1, 2))
    model = LGBMClassifier(n_estimators=15, num_leaves=7, verbose=-1).fit(X, y)
    fn = predict_fn(model, "classification", NAMES, n_classes=3)
    batch = fn(X[:20])
    assert batch.shape == (20, 3)
    np.testing.assert_allclose(batch, model.predict_proba(X[:20]), rtol=1e-12)
    singles = np.vstack([fn(X[i : i + 1]) for i in range(20)])  # the fast single-row C API
    assert fn(X[:1]).shape == (1, 3)
    np.testing.assert_allclose(singles, batch, rtol=1e-12)


@pytest.mark.parametrize(
    "model",
    [LogisticRegression(), LGBMClassifier(n_estimators=5, verbose=-1)],
    ids=["sklearn", "lightgbm"],
)
def test_a_model_that_saw_only_some_classes_gives_the_others_zero(model: object) -> None:
    X, y = _data((0, 2))  # a small segment: class 1 never occurs in its training rows
    model.fit(X, y)  # type: ignore[attr-defined]
    fn = predict_fn(model, "classification", NAMES, n_classes=3)
    got = fn(X[:10])
    own = model.predict_proba(X[:10])  # type: ignore[attr-defined]
    assert got.shape == (10, 3)
    np.testing.assert_allclose(got[:, [0, 2]], own)
    assert (got[:, 1] == 0).all()


def test_classes_that_are_not_indices_are_refused() -> None:
    X, _ = _data((0, 1, 2))
    model = LogisticRegression().fit(X, np.array(["x", "y", "z"])[np.arange(len(X)) % 3])
    with pytest.raises(ValueError, match="not class indices"):
        predict_fn(model, "classification", NAMES, n_classes=3)


def test_binary_models_still_answer_the_positive_class_probability() -> None:
    X, y = _data((0, 1))
    model = LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y)
    got = predict_fn(model, "classification", NAMES)(X[:5])
    assert got.shape == (5,)
    np.testing.assert_allclose(got, model.predict_proba(X[:5])[:, 1])
