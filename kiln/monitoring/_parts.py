"""The parts of a monitor pass that other modules provide (drift, live performance, alerts,
notifications, gauges), found by name: a build without one still monitors the rest, and the
pass notes what it did not compute."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

__all__ = ["part"]


def part(module: str, name: str) -> Callable[..., Any] | None:
    """``module.name``, or None when the module is not in this build (an error inside a module
    that is there is raised, never hidden)."""
    if importlib.util.find_spec(module) is None:
        return None
    found: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return found
