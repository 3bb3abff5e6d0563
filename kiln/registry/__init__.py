"""Model versions: packages, digests, lineage, stages, the Predictor, and the loaded-version
handle (:class:`Version`) that gates, serving, `kiln predict` and the monitor share."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.registry.auth import check_admin
    from kiln.registry.package import LoadedPackage, environment_mismatches, load_package
    from kiln.registry.predictor import Prediction, Predictor
    from kiln.registry.stages import StageError, Stages, Transition, previous_production
    from kiln.registry.version import Version

# Imported on first use: `kiln models list` must not pay for LightGBM and scikit-learn.
_EXPORTS = {
    "check_admin": "kiln.registry.auth",
    "LoadedPackage": "kiln.registry.package",
    "environment_mismatches": "kiln.registry.package",
    "load_package": "kiln.registry.package",
    "Prediction": "kiln.registry.predictor",
    "Predictor": "kiln.registry.predictor",
    "StageError": "kiln.registry.stages",
    "Stages": "kiln.registry.stages",
    "Transition": "kiln.registry.stages",
    "previous_production": "kiln.registry.stages",
    "Version": "kiln.registry.version",
}

__all__ = [
    "LoadedPackage",
    "Prediction",
    "Predictor",
    "StageError",
    "Stages",
    "Transition",
    "Version",
    "check_admin",
    "environment_mismatches",
    "load_package",
    "previous_production",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
