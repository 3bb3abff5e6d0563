"""Checks made before any data is read: the model named in kiln.yaml imports, and its params
have known names and values of the types the estimator declares."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from kiln.config.loader import LoadedConfig, import_object
from kiln.errors import ConfigError
from kiln.runs.param_types import wrong_params

__all__ = ["check_importable"]


def check_importable(loaded: LoadedConfig) -> None:
    model = loaded.config.model
    if model.estimator:
        where = loaded.where("model", "estimator")
        cls = import_object(
            model.estimator, base_dir=loaded.base_dir, where=where, field="model.estimator"
        )
        if not isinstance(cls, type):
            raise ConfigError(
                f"{where}: model.estimator: {model.estimator} is not a class",
                hint="name an estimator class such as lightgbm.LGBMRegressor",
            )
        _check_params(loaded, cls, model.params)
    if model.train:
        where = loaded.where("model", "train")
        fn = import_object(model.train, base_dir=loaded.base_dir, where=where, field="model.train")
        if not callable(fn):
            raise ConfigError(
                f"{where}: model.train: {model.train} is not a function",
                hint="point it at a function train(X, y, context) -> fitted model",
            )


def _check_params(loaded: LoadedConfig, cls: type, params: dict[str, Any]) -> None:
    where = loaded.where("model", "params")
    known = _known_params(cls)
    unknown = sorted(set(params) - known) if known else []
    if unknown:
        first = unknown[0]
        close = difflib.get_close_matches(first, sorted(known), n=1)
        raise ConfigError(
            f"{where}: model.params: {cls.__module__}.{cls.__name__} has no parameter "
            + ", ".join(repr(u) for u in unknown)
            + (f"; did you mean {close[0]!r}?" if close else ""),
            hint="check the parameter names against the estimator's documentation",
        )
    wrong = wrong_params(cls, params)
    if wrong:
        lines = [
            f"{loaded.where('model', 'params', name)}: model.params.{name}: {problem}"
            for name, problem in wrong
        ]
        hint = (
            f"give each parameter the type {cls.__module__}.{cls.__name__} documents "
            "(numbers unquoted, true/false for flags)"
        )
        if len(lines) == 1:
            raise ConfigError(lines[0], hint=hint)
        raise ConfigError(
            f"{where}: model.params: {len(lines)} values do not fit their types",
            problems=lines,
            hint=hint,
        )
    try:
        cls(**params)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{where}: model.params do not fit {cls.__module__}.{cls.__name__}: {e}",
            hint="check the parameter names and values against the estimator's documentation",
        ) from None


def _known_params(cls: type) -> set[str]:
    """Parameter names the estimator accepts; empty when it takes arbitrary keywords we cannot
    enumerate. LightGBM's wrappers take any booster parameter through ``**kwargs`` and silently
    ignore unknown ones, so their names come from LightGBM's own alias table."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return set()
    names = {n for n, p in sig.parameters.items() if p.kind is not p.VAR_KEYWORD}
    if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return names
    if cls.__module__.startswith("lightgbm"):
        try:
            from lightgbm.basic import _ConfigAliases

            table = _ConfigAliases._get_all_param_aliases()
        except (ImportError, AttributeError):  # private API moved: fall back to no check
            return set()
        return names | set(table) | {a for aliases in table.values() for a in aliases}
    return set()
