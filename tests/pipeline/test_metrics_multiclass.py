"""The classification metrics against scikit-learn's, on binary and multiclass answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from kiln.pipeline.metrics import HIGHER_IS_BETTER, MULTICLASS_METRICS, score


def _multiclass(n: int = 300, k: int = 4, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n).astype(np.float64)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y.astype(int)] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p


def test_multiclass_metrics_match_scikit_learn() -> None:
    y, p = _multiclass()
    got = score(["logloss", "accuracy", "f1_macro", "auc"], y, p)
    pred = p.argmax(axis=1)
    assert got["logloss"] == pytest.approx(log_loss(y, p, labels=range(4)))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert got["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", labels=range(4)))


def test_multiclass_f1_counts_a_class_only_predicted_and_auc_needs_every_class() -> None:
    y = np.array([0.0, 0.0, 1.0, 1.0])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1]])
    got = score(["f1_macro", "auc"], y, p)
    assert got["f1_macro"] == pytest.approx(f1_score(y, p.argmax(axis=1), average="macro"))
    assert got["auc"] is None  # class 2 never occurs: one-vs-rest AUC is undefined


def test_binary_f1_macro_and_unchanged_binary_metrics() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=200).astype(np.float64)
    p = np.clip(0.6 * y + 0.4 * rng.uniform(size=200), 0, 1)
    got = score(["f1_macro", "logloss", "accuracy", "auc"], y, p)
    assert got["f1_macro"] == pytest.approx(f1_score(y, p >= 0.5, average="macro"))
    assert got["logloss"] == pytest.approx(log_loss(y, p))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5))
    assert got["auc"] == pytest.approx(roc_auc_score(y, p))


def test_multiclass_defaults_and_direction() -> None:
    assert MULTICLASS_METRICS[0] == "logloss"
    assert HIGHER_IS_BETTER["f1_macro"] is True
    assert score(list(MULTICLASS_METRICS), np.empty(0), np.empty((0, 3))) == dict.fromkeys(
        MULTICLASS_METRICS
    )
