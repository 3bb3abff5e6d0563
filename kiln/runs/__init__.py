"""The run lifecycle: the only layer that joins the planner, the executors and the stores."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.runs.preflight import check_importable
    from kiln.runs.result import RunResult
    from kiln.runs.runner import Runner
    from kiln.runs.training import TrainContext

# Imported on first use: `kiln models list` must not pay for LightGBM and scikit-learn.
_EXPORTS = {
    "Runner": "kiln.runs.runner",
    "RunResult": "kiln.runs.result",
    "check_importable": "kiln.runs.preflight",
    "TrainContext": "kiln.runs.training",
}

__all__ = ["RunResult", "Runner", "TrainContext", "check_importable"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
