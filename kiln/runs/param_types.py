"""The values of ``model.params`` checked against the estimator's own parameter types, before
any data is read or any model is fitted.

- scikit-learn estimators declare ``_parameter_constraints``; scikit-learn's own validator checks
  them (types and ranges), as ``fit`` would, only earlier.
- Any other class is checked against the type hints of its ``__init__`` (LightGBM's wrappers
  annotate every named parameter).
- LightGBM's booster parameters passed through ``**kwargs`` (``feature_fraction``, ``lambda_l1``,
  ...) are resolved to their main name with LightGBM's alias table and checked against the type
  LightGBM's parameter documentation gives.

A value whose declared type cannot be judged (an unresolvable hint, an unknown class) passes:
this check refuses only what certainly does not fit.
"""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import re
import types
import typing
from typing import Any

__all__ = ["wrong_params"]

# LightGBM's documented parameter types (docs/Parameters.rst, "type = int|double|bool|string"),
# by main name; the aliases come from LightGBM itself at run time.
_LGBM_INT = """num_iterations num_leaves num_threads seed max_depth min_data_in_leaf bagging_freq
bagging_seed feature_fraction_seed early_stopping_round max_cat_threshold max_cat_to_onehot top_k
min_data_per_group drop_seed max_drop extra_seed num_grad_quant_bins verbosity max_bin
min_data_in_bin bin_construct_sample_cnt data_random_seed num_class objective_seed
multi_error_top_k lambdarank_truncation_level gpu_platform_id gpu_device_id num_gpu"""
_LGBM_FLOAT = """learning_rate min_sum_hessian_in_leaf bagging_fraction pos_bagging_fraction
neg_bagging_fraction feature_fraction feature_fraction_bynode early_stopping_min_delta
max_delta_step lambda_l1 lambda_l2 linear_lambda min_gain_to_split drop_rate skip_drop top_rate
other_rate cat_l2 cat_smooth cegb_tradeoff cegb_penalty_split path_smooth refit_decay_rate sigmoid
scale_pos_weight alpha fair_c poisson_max_delta_step tweedie_variance_power"""
_LGBM_BOOL = """linear_tree force_col_wise force_row_wise deterministic extra_trees
first_metric_only xgboost_dart_mode uniform_drop use_quantized_grad quant_train_renew_leaf
stochastic_rounding is_unbalance boost_from_average reg_sqrt lambdarank_norm enable_bundle
use_missing zero_as_missing feature_pre_filter is_enable_sparse gpu_use_dp"""
_LGBM_STR = """objective boosting data_sample_strategy tree_learner device_type
monotone_constraints_method"""
_LGBM_TYPES: dict[str, Any] = (
    dict.fromkeys(_LGBM_INT.split(), int)
    | dict.fromkeys(_LGBM_FLOAT.split(), float)
    | dict.fromkeys(_LGBM_BOOL.split(), bool)
    | dict.fromkeys(_LGBM_STR.split(), str)
    | {"metric": str | list[str]}
)
_SKLEARN_MESSAGE = re.compile(
    r"^The '.+?' parameter of \w+ (must be .*)\. Got (.*) instead\.$", re.S
)


def wrong_params(cls: type, params: dict[str, Any]) -> list[tuple[str, str]]:
    """``(name, what is wrong)`` for each of ``params`` whose value does not fit its type."""
    constraints = getattr(cls, "_parameter_constraints", None)
    if isinstance(constraints, dict):
        return _sklearn_problems(cls, constraints, params)
    hints = _init_hints(cls)
    lgbm = _lightgbm_types() if cls.__module__.startswith("lightgbm") else {}
    problems = []
    for name, value in params.items():
        tp = hints.get(name, lgbm.get(name))
        if tp is not None and not _fits(value, tp):
            problems.append((name, f"expected {_describe(tp)}, got {value!r}"))
    return problems


def _sklearn_problems(
    cls: type, constraints: dict[str, Any], params: dict[str, Any]
) -> list[tuple[str, str]]:
    from sklearn.utils._param_validation import (
        InvalidParameterError,
        validate_parameter_constraints,
    )

    problems = []
    for name, value in params.items():
        try:
            validate_parameter_constraints(constraints, {name: value}, caller_name=cls.__name__)
        except InvalidParameterError as e:
            m = _SKLEARN_MESSAGE.match(str(e))
            problems.append((name, f"{m.group(1)}, got {m.group(2)}" if m else str(e)))
    return problems


def _init_hints(cls: type) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except (NameError, TypeError, AttributeError, SyntaxError):  # hints we cannot resolve
        return {}
    try:
        names = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    return {n: hints[n] for n in names if n in hints}


def _lightgbm_types() -> dict[str, Any]:
    try:
        from lightgbm.basic import _ConfigAliases

        table = _ConfigAliases._get_all_param_aliases()
    except (ImportError, AttributeError):  # private API moved: check the main names only
        return dict(_LGBM_TYPES)
    out = dict(_LGBM_TYPES)
    for main, aliases in table.items():
        if main in _LGBM_TYPES:
            out |= dict.fromkeys(aliases, _LGBM_TYPES[main])
    return out


def _fits(value: Any, tp: Any) -> bool:
    """Whether a value read from YAML can be an instance of ``tp`` (types it cannot judge pass)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _fits(value, typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if tp is None or tp is type(None):
        return value is None
    base = origin or tp
    if not isinstance(base, type) or base is object:
        return True  # Any, a TypeVar, an unresolved name: cannot judge
    if base is bool:
        return isinstance(value, bool)
    if issubclass(base, numbers.Number):  # true/false is not a number here
        kinds = int if issubclass(base, numbers.Integral) else int | float
        return isinstance(value, kinds) and not isinstance(value, bool)
    if isinstance(value, list) and base in (tuple, collections.abc.Sequence):
        return True  # YAML has no tuples
    try:
        return isinstance(value, base)
    except TypeError:  # a class that refuses isinstance checks: cannot judge
        return True


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _describe(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        parts = list(dict.fromkeys(_describe(a) for a in typing.get_args(tp)))
        return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    base = origin or tp
    names = {
        int: "an integer", float: "a number", str: "a string", bool: "true or false",
        type(None): "null", dict: "a mapping", list: "a list", tuple: "a list",
        collections.abc.Callable: "a function",
    }  # fmt: skip
    if tp is None:
        return "null"
    if base in names:
        return names[base]
    return f"a {getattr(base, '__name__', str(base))}"
