"""``Predictor``: the contract between the registry and serving.

It routes each row to its segment's model, sends unknown segments (and rows whose segment model
raised or returned a non-finite number) to the fallback, and says per row which model answered
and which categorical features held a value training never saw (*unseen*). Under the version's
``unseen_categories: fallback`` policy such a row is answered by the fallback; ``reject`` is
applied before predicting, by the request check of the server and of batch scoring.
A multiclass version (its manifest lists more than two ``classes``) answers each row's class
probabilities; ``values`` is then the probability of the most probable class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from kiln.pipeline.features import FeatureSchema
from kiln.pipeline.plan import FALLBACK
from kiln.pipeline.rows import UnseenPolicy, text_limit, unseen_policy
from kiln.registry.adapters import PredictFn, predict_fn
from kiln.registry.package import LoadedPackage, load_package
from kiln.stores.content import ContentStore

__all__ = ["Prediction", "Predictor"]

Rows: TypeAlias = pd.DataFrame | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Prediction:
    values: np.ndarray
    model: list[str]
    """The segment whose model answered each row, or ``__fallback__``."""
    fallback: np.ndarray
    errors: int = 0
    """Segment-model calls that raised or gave non-finite values (their rows fell back)."""
    probabilities: np.ndarray | None = None
    """A multiclass version's ``(rows, classes)`` probabilities (None for the others)."""
    classes: list[str] | None = None
    """A multiclass version's labels, in the order of the columns of ``probabilities``."""
    unseen: list[tuple[str, ...]] | None = None
    """Per row, the categorical features whose value was unseen in training; None: no row."""

    def unseen_of(self, i: int) -> tuple[str, ...]:
        return () if self.unseen is None else self.unseen[i]

    def labels(self) -> list[str]:
        """The most probable class of each row (a multiclass version only)."""
        if self.probabilities is None or self.classes is None:
            raise ValueError("labels() needs a multiclass prediction")
        classes = self.classes
        return [classes[i] for i in np.argmax(self.probabilities, axis=1).tolist()]

    def rows(self, start: int, end: int) -> Prediction:
        """The rows ``start:end`` (a shadow batch of several requests is split this way)."""
        return Prediction(
            self.values[start:end],
            self.model[start:end],
            self.fallback[start:end],
            probabilities=None if self.probabilities is None else self.probabilities[start:end],
            classes=self.classes,
            unseen=None if self.unseen is None else self.unseen[start:end],
        )


class Predictor:
    def __init__(self, package: LoadedPackage) -> None:
        m = package.manifest
        self.digest = package.digest
        self.manifest = m
        self.task: str = m["task"]
        self.schema = FeatureSchema.from_dict(m["features"])
        self.segment_column: str | None = m.get("segment_column")
        classes = m.get("classes")
        self.classes: list[str] | None = None if classes is None else [str(c) for c in classes]
        """The labels of a classifier whose target was not 0/1 (sorted, as trained)."""
        self.multiclass = self.classes is not None and len(self.classes) > 2
        k = len(self.classes) if self.classes is not None and self.multiclass else None
        self.unseen_policy: UnseenPolicy = unseen_policy(m)
        self.max_text_length = text_limit(m)
        names = self.schema.names
        self._fns: dict[str, PredictFn] = {
            seg: predict_fn(model, self.task, names, n_classes=k)
            for seg, model in package.models.items()
        }
        self._fallback = predict_fn(package.fallback, self.task, names, n_classes=k)

    @classmethod
    def load(cls, content: ContentStore, digest: str, *, label: str) -> Predictor:
        return cls(load_package(content, digest, label=label))

    @property
    def segments(self) -> list[str]:
        return list(self._fns)

    def predict(self, rows: Rows) -> Prediction:
        unseen: list[tuple[str, ...]] | None
        if isinstance(rows, pd.DataFrame):
            X = self.schema.encode(rows)
            unseen = self.schema.unseen_in_frame(rows)
            segs: list[str | None] = list(self._segments_of_frame(rows))
        else:
            X, unseen = self.schema.encode_rows_unseen(rows)
            col = self.segment_column
            segs = [_key(r.get(col)) if col else None for r in rows]
        if unseen is not None and self.unseen_policy == "fallback":
            segs = [None if u else s for s, u in zip(segs, unseen, strict=True)]
        if self.multiclass:
            return replace(self._predict_classes(X, segs), unseen=unseen)
        if len(segs) == 1 and not isinstance(rows, pd.DataFrame):
            single = self._predict_one(X, segs[0])
            if single is not None:
                return single if unseen is None else replace(single, unseen=unseen)
        values, used, fell_back, errors = self._route(X, segs, ())
        return Prediction(values, used, fell_back, errors=errors, unseen=unseen)

    def _predict_classes(self, X: np.ndarray, segs: Sequence[str | None]) -> Prediction:
        """``predict`` of a multiclass version: a row falls back when its segment model raised
        or gave a non-finite probability of any class."""
        proba, used, fell_back, errors = self._route(X, segs, (len(self.classes or ()),))
        return Prediction(
            values=proba.max(axis=1) if len(proba) else np.empty(0),
            model=used,
            fallback=fell_back,
            errors=errors,
            probabilities=proba,
            classes=self.classes,
        )

    def _route(
        self, X: np.ndarray, segs: Sequence[str | None], width: tuple[int, ...]
    ) -> tuple[np.ndarray, list[str], np.ndarray, int]:
        """Each row's answer (of shape ``width``: () a number, (k,) k class probabilities) from
        its segment's model, else the fallback's: for an unknown segment, a model that raised,
        or a row with a non-finite answer. Returns the answers, the model of each row, which
        rows fell back, and how many segment-model calls failed."""
        n = X.shape[0]
        answers = np.empty((n, *width), dtype=np.float64)
        used = np.full(n, FALLBACK, dtype=object)
        fell_back = np.ones(n, dtype=bool)
        errors = 0
        pending: list[np.ndarray] = []
        for seg, idx in _groups(segs).items():
            fn = self._fns.get(seg) if seg is not None else None
            if fn is None:
                pending.append(idx)
                continue
            try:
                out = np.asarray(fn(X[idx]), dtype=np.float64).reshape(len(idx), *width)
            except Exception:  # a broken segment model must not fail the request
                errors += 1
                pending.append(idx)
                continue
            ok = np.isfinite(out).reshape(len(idx), -1).all(axis=1)
            if not ok.all():
                errors += 1
                pending.append(idx[~ok])
            good = idx[ok]
            answers[good] = out[ok]
            used[good] = seg
            fell_back[good] = False
        if pending:
            idx = np.concatenate(pending) if len(pending) > 1 else pending[0]
            fallback = np.asarray(self._fallback(X[idx]), dtype=np.float64)
            answers[idx] = fallback.reshape(len(idx), *width)
        return answers, used.tolist(), fell_back, errors

    def _predict_one(self, X: np.ndarray, seg: str | None) -> Prediction | None:
        """The one-row case of ``predict``, without its grouping and indexing (the serving
        hot path). None when the segment model gave other than one value: the loop decides."""
        fn = None if seg is None else self._fns.get(seg)
        errors = 0
        if seg is not None and fn is not None:
            try:
                out = np.asarray(fn(X), dtype=np.float64).reshape(-1)
            except Exception:  # a broken segment model must not fail the request
                out = None
            if out is not None and out.shape[0] != 1:
                return None
            if out is not None and np.isfinite(out[0]):
                return Prediction(out, [seg], np.zeros(1, dtype=bool))
            errors = 1
        values = np.asarray(self._fallback(X), dtype=np.float64).reshape(-1)
        if values.shape[0] != 1:
            return None
        return Prediction(values, [FALLBACK], np.ones(1, dtype=bool), errors)

    def _segments_of_frame(self, df: pd.DataFrame) -> Sequence[str | None]:
        col = self.segment_column
        if col is None or col not in df.columns:
            return [None] * len(df)
        return _segment_keys(df[col])


def _segment_keys(s: pd.Series) -> list[str | None]:
    """Segment values as strings, the way training named them; nulls stay None."""
    keys: list[str | None] = s.astype("string").astype(object).tolist()
    return [None if k is pd.NA else k for k in keys]


def _key(value: Any) -> str | None:
    return None if value is None else str(value)


def _groups(segs: Sequence[str | None]) -> dict[str | None, np.ndarray]:
    if len(segs) == 1:
        return {segs[0]: np.zeros(1, dtype=np.intp)}
    groups: dict[str | None, list[int]] = {}
    for i, s in enumerate(segs):
        groups.setdefault(s, []).append(i)
    return {k: np.asarray(v, dtype=np.intp) for k, v in groups.items()}
