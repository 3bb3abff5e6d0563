"""What every kiln.yaml model is made of: strict models, durations, sizes, metric names."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "Duration",
    "Metric",
    "Retention",
    "Strict",
    "parse_duration",
    "parse_size",
]

REGRESSION_METRICS = ("mae", "rmse", "r2")
CLASSIFICATION_METRICS = ("auc", "logloss", "accuracy", "f1_macro")
Metric = Literal["mae", "rmse", "r2", "auc", "logloss", "accuracy", "f1_macro"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}  # fmt: skip


def parse_duration(value: Any) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90s"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])
    raise ValueError(f"expected a duration such as '30m', '12h' or '7d', got {value!r}")


def parse_size(value: Any) -> int:
    """``"2GiB"``, ``"512MB"`` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise ValueError(f"expected a size such as '512MiB' or '2GiB', got {value!r}")


Duration = Annotated[timedelta, Field(json_schema_extra={"examples": ["30m", "12h", "7d"]})]


def _retention(value: Any) -> timedelta | None:
    if value is None:
        return None
    kept = parse_duration(value)
    if kept <= timedelta(0):
        raise ValueError(f"expected a positive duration such as '30d', got {value!r}")
    return kept


Retention = Annotated[timedelta | None, BeforeValidator(_retention)]
"""How long something is kept (``"30d"``), or None: kept for good."""


class Strict(BaseModel):
    """Unknown keys are refused (a typo is an error, not a silent default); frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
