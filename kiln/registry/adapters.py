"""Turn a fitted model into the leanest ``predict(X: float matrix) -> 1-D array`` it allows
(for a multiclass classifier: the ``(rows, classes)`` matrix of probabilities).

Evaluation and serving both go through here, so the holdout metrics are measured on exactly the
code path that answers requests. For LightGBM the booster on a NumPy array skips the scikit-learn
wrapper's validation (about 20x less overhead per row), and a single row goes through LightGBM's
fast single-row C API, set up once per booster: the per-call set-up of ``Booster.predict`` costs
more than the trees themselves on one row. Both paths run the same trees on the same values.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["PredictFn", "predict_fn"]

PredictFn = Callable[[np.ndarray], np.ndarray]


def predict_fn(
    model: Any, task: str, feature_names: Sequence[str], *, n_classes: int | None = None
) -> PredictFn:
    """``n_classes`` (a classifier of more than two classes, trained on their indices) makes the
    function answer one probability per class, in index order; ValueError if the model cannot."""
    if n_classes is not None:
        return _proba_fn(model, feature_names, n_classes)
    booster = _lightgbm_booster(model)
    if booster is not None:
        return _BoosterFn(booster)
    names = getattr(model, "feature_names_in_", None)
    if task == "classification" and hasattr(model, "predict_proba"):
        if names is not None:
            return lambda X: model.predict_proba(_frame(X, feature_names))[:, 1]
        return lambda X: model.predict_proba(X)[:, 1]
    if names is not None:
        return lambda X: np.asarray(model.predict(_frame(X, feature_names)), dtype=np.float64)
    return lambda X: np.asarray(model.predict(X), dtype=np.float64)


def _proba_fn(model: Any, feature_names: Sequence[str], k: int) -> PredictFn:
    classes = getattr(model, "classes_", None)
    module = type(model).__module__
    if module.startswith("lightgbm"):
        if type(model).__name__ == "Booster":
            return _BoosterFn(model)
        if classes is not None and len(classes) == k and hasattr(model, "booster_"):
            return _BoosterFn(model.booster_)  # the classes are 0 .. k-1: y was their index
    if not callable(getattr(model, "predict_proba", None)):
        raise ValueError(
            f"the model {type(model).__name__!r} has no predict_proba: a multiclass model must"
            " answer one probability per class"
        )
    framed = getattr(model, "feature_names_in_", None) is not None
    names = list(feature_names)

    def proba(X: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_proba(_frame(X, names) if framed else X), np.float64)

    if classes is None or (len(classes) == k and np.array_equal(classes, np.arange(k))):
        return proba
    try:
        columns = np.asarray(classes, dtype=np.float64)
    except (TypeError, ValueError):
        columns = np.full(len(classes), np.nan)
    if not np.all((columns == np.round(columns)) & (columns >= 0) & (columns < k)):
        raise ValueError(
            f"the model's classes_ {list(classes)[:5]} are not class indices 0 .. {k - 1}"
        )
    index = columns.astype(np.intp)

    def widened(X: np.ndarray) -> np.ndarray:
        """A model that saw only some classes (a small segment): the others get 0."""
        p = proba(X)
        out = np.zeros((p.shape[0], k), dtype=np.float64)
        out[:, index] = p
        return out

    return widened


class _BoosterFn:
    """``booster.predict(X, num_threads=1)``, with one-row matrices on the fast C API.

    The fast path predicts what ``Booster.predict`` does (normal prediction, the booster's best
    iteration, one thread), set up on first use: one value per row, or for a multiclass booster
    one ``(1, classes)`` row of probabilities. If LightGBM lacks it, every call takes
    ``Booster.predict``.
    """

    def __init__(self, booster: Any) -> None:
        self._booster = booster
        self._lock = threading.Lock()
        self._handle: ctypes.c_void_p | None = None
        self._call: Any = None
        self._ncol = -1
        self._width = 1
        self._usable = True

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if X.shape[0] == 1 and self._usable:
            out = self._single(X)
            if out is not None:
                return out
        return self._booster.predict(X, num_threads=1)

    def _single(self, X: np.ndarray) -> np.ndarray | None:
        if self._handle is None and not self._setup():
            return None
        if X.shape[1] != self._ncol:
            return None  # Booster.predict raises its own error about the number of features
        row = X if X.dtype == np.float64 and X.flags.c_contiguous else None
        if row is None:
            row = np.ascontiguousarray(X, dtype=np.float64)
        out = np.empty(self._width, dtype=np.float64)
        n = ctypes.c_int64(0)
        self._call(
            self._handle,
            ctypes.c_void_p(row.ctypes.data),
            ctypes.byref(n),
            ctypes.c_void_p(out.ctypes.data),
        )
        return out if self._width == 1 else out.reshape(1, -1)

    def _setup(self) -> bool:
        with self._lock:
            if self._handle is not None:
                return True
            if not self._usable:
                return False
            try:
                from lightgbm import basic

                lib, check = basic._LIB, basic._safe_call
                booster = self._booster
                width = booster.num_model_per_iteration()
                ncol = booster.num_feature()
                handle = ctypes.c_void_p()
                check(
                    lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                        booster._handle,
                        ctypes.c_int(basic._C_API_PREDICT_NORMAL),
                        ctypes.c_int(0),
                        ctypes.c_int(booster.best_iteration),
                        ctypes.c_int(basic._C_API_DTYPE_FLOAT64),
                        ctypes.c_int32(ncol),
                        ctypes.c_char_p(b"num_threads=1"),
                        ctypes.byref(handle),
                    )
                )
                # Called through PyDLL: the GIL stays held for the few microseconds of one row.
                # Releasing it (as CDLL does) hands it to any busy thread of the process for up
                # to sys.getswitchinterval() before this thread gets it back.
                fast = ctypes.PyDLL(lib._name).LGBM_BoosterPredictForMatSingleRowFast

                def call(*args: Any) -> None:
                    check(fast(*args))

            except Exception:  # any LightGBM without the fast API: keep Booster.predict
                self._usable = False
                return False
            weakref.finalize(self, lib.LGBM_FastConfigFree, handle)
            self._call, self._ncol, self._width, self._handle = call, ncol, width, handle
            return True


def _lightgbm_booster(model: Any) -> Any | None:
    module = type(model).__module__
    if not module.startswith("lightgbm"):
        return None
    if hasattr(model, "booster_"):  # LGBMRegressor / LGBMClassifier (binary: P(class 1))
        classes = getattr(model, "classes_", None)
        if classes is not None and len(classes) != 2:
            return None
        return model.booster_
    return model if type(model).__name__ == "Booster" else None


def _frame(X: np.ndarray, names: Sequence[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(X, columns=list(names), copy=False)
