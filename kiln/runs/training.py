"""The train task: runs inside an executor worker, once per segment and once for the fallback.

It must stay importable without the metadata store or the CLI: workers import only this.
"""

from __future__ import annotations

import inspect
import pickle
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

from kiln.config.loader import import_object
from kiln.errors import TrainingError
from kiln.pipeline.metrics import score
from kiln.pipeline.plan import FALLBACK
from kiln.registry.adapters import predict_fn

__all__ = ["TrainContext", "TrainResult", "TrainSpec", "TrainTask", "train_segment"]


@dataclass(frozen=True)
class TrainSpec:
    """What every task of one run shares."""

    task: str
    features: list[str]
    categorical: list[int]
    metrics: list[str]
    base_dir: str
    where: str
    estimator: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    train: str | None = None
    threads: int = 1
    classes: list[str] | None = None
    """The labels of a classification target that is not 0/1; ``y`` holds their indices."""
    refit: bool = False
    """After scoring the holdout, fit again on train + holdout rows: that model is the artifact."""

    @property
    def n_classes(self) -> int | None:
        """The number of classes of a multiclass target (None: regression or binary)."""
        return len(self.classes) if self.classes is not None and len(self.classes) > 2 else None


@dataclass(frozen=True)
class TrainTask:
    segment: str
    spec: TrainSpec
    X_train: np.ndarray
    y_train: np.ndarray
    X_holdout: np.ndarray
    y_holdout: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    artifact: bytes
    metrics: dict[str, float | None]
    holdout_pred: np.ndarray
    rows_train: int
    rows_holdout: int
    model_type: str
    rows_train_refit: int | None = None
    """Rows the served model was refit on (``evaluation.refit``); None: no refit."""


@dataclass(frozen=True)
class TrainContext:
    """Handed to a custom ``train(X, y, context)`` function next to its data."""

    segment: str
    task: str
    features: list[str]
    categorical: list[str]
    threads: int
    classes: list[str] | None = None
    """A classifier's labels when they are not 0/1: ``y`` is their index (0 .. K-1); with more
    than two, ``predict_proba(X)`` must give one column per class, in this order."""


def train_segment(task: TrainTask) -> TrainResult:
    spec = task.spec
    label = "the fallback" if task.segment == FALLBACK else f"segment {task.segment!r}"
    model = _fit(task, label)
    k = spec.n_classes
    try:
        predict = predict_fn(model, spec.task, spec.features, n_classes=k)
    except ValueError as e:
        raise TrainingError(f"{label}: {e}", hint=_PROBA_HINT) from None
    if k is not None:
        pred = _predict_proba(predict, task, label, k)
    elif len(task.y_holdout):
        pred = np.asarray(predict(task.X_holdout), dtype=np.float64).reshape(-1)
    else:
        pred = np.empty(0)
    if pred.shape[0] != task.y_holdout.shape[0]:
        raise TrainingError(
            f"{label}: the model returned {pred.shape[0]} predictions for "
            f"{task.y_holdout.shape[0]} holdout rows",
            hint="predict(X) must return one number per row",
        )
    metrics = score(spec.metrics, task.y_holdout, pred)  # the first fit's, on unseen rows
    refit_rows: int | None = None
    if spec.refit:
        refit_rows = len(task.y_train) + len(task.y_holdout)
        if len(task.y_holdout):
            everything = replace(
                task,
                X_train=np.concatenate([task.X_train, task.X_holdout]),
                y_train=np.concatenate([task.y_train, task.y_holdout]),
            )
            model = _fit(everything, label)
    return TrainResult(
        artifact=_dumps(model, spec),
        metrics=metrics,
        holdout_pred=pred,
        rows_train=len(task.y_train),
        rows_holdout=len(task.y_holdout),
        model_type=f"{type(model).__module__}.{type(model).__qualname__}",
        rows_train_refit=refit_rows,
    )


_PROBA_HINT = (
    "a multiclass model needs predict_proba(X) giving one column per class (classes_ says"
    " which); context.classes lists the labels that y's indices stand for"
)


def _predict_proba(predict: Any, task: TrainTask, label: str, k: int) -> np.ndarray:
    if not len(task.y_holdout):
        return np.empty((0, k))
    pred = np.asarray(predict(task.X_holdout), dtype=np.float64)
    if pred.ndim != 2 or pred.shape[1] != k:
        raise TrainingError(
            f"{label}: the model's probabilities have shape {pred.shape}, not"
            f" ({len(task.y_holdout)}, {k}) for {k} classes",
            hint=_PROBA_HINT,
        )
    return pred


def _fit(task: TrainTask, label: str) -> Any:
    return _train_custom(task, label) if task.spec.train is not None else _fit_estimator(task)


def _dumps(model: Any, spec: TrainSpec) -> bytes:
    """Classes from the user's own train module are pickled by value, so the package loads in a
    server that does not have that file on its path."""
    if spec.train is None:
        return pickle.dumps(model, protocol=5)
    module = sys.modules.get(spec.train.partition(":")[0])
    if module is not None:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(model, protocol=5)
    finally:
        if module is not None:
            cloudpickle.unregister_pickle_by_value(module)


def _fit_estimator(task: TrainTask) -> Any:
    spec = task.spec
    cls = import_object(
        str(spec.estimator), base_dir=Path(spec.base_dir), where=spec.where, field="model.estimator"
    )
    params = dict(spec.params)
    accepted = _accepted_params(cls)
    lightgbm = cls.__module__.startswith("lightgbm")
    if "n_jobs" in accepted:
        params.setdefault("n_jobs", spec.threads)
    if lightgbm:
        params.setdefault("verbose", -1)
    try:
        model = cls(**params)
    except TypeError as e:
        raise TrainingError(
            f"{spec.where}: model.params do not fit {spec.estimator}: {e}",
            hint="check the parameter names against the estimator's documentation",
        ) from None
    fit_kwargs: dict[str, Any] = {}
    if lightgbm and spec.categorical:
        fit_kwargs["categorical_feature"] = spec.categorical
    model.fit(task.X_train, task.y_train, **fit_kwargs)
    return model


def _accepted_params(cls: Any) -> set[str]:
    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()


def _train_custom(task: TrainTask, label: str) -> Any:
    spec = task.spec
    fn = import_object(
        str(spec.train), base_dir=Path(spec.base_dir), where=spec.where, field="model.train"
    )
    X = pd.DataFrame(task.X_train, columns=spec.features, copy=False)
    y = pd.Series(task.y_train, name="target")
    ctx = TrainContext(
        segment=task.segment,
        task=spec.task,
        features=list(spec.features),
        categorical=[spec.features[i] for i in spec.categorical],
        threads=spec.threads,
        classes=None if spec.classes is None else list(spec.classes),
    )
    model = fn(X, y, ctx)
    if not callable(getattr(model, "predict", None)):
        raise TrainingError(
            f"{label}: train function {spec.train} returned {type(model).__name__!r}, "
            "which has no predict method",
            hint="return a fitted model whose predict(X) takes a 2-D array of the features",
        )
    return model
