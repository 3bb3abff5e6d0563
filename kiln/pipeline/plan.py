"""Pure planning of a run: its steps, the time-based split, and the segment tasks.

Nothing here reads or writes anything; ``kiln.runs`` feeds it data and carries out the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kiln.config.models import PipelineConfig, SplitConfig

__all__ = ["FALLBACK", "STEPS", "SegmentPlan", "plan_segments", "time_cutoff"]

FALLBACK = "__fallback__"
FALLBACK_LABEL = "(fallback)"
"""How tables show the fallback's task."""
"""Task key of the fallback model (trained on all rows); never a segment value."""

STEPS = ("extract", "check", "train", "package", "register", "release")


def time_cutoff(times: pd.Series, split: SplitConfig) -> pd.Timestamp:
    """The first instant of the holdout: rows with ``time >= cutoff`` are held out.

    With ``holdout_fraction`` the cutoff is the time quantile, so that no row of the holdout is
    older than any training row (no leakage across time).
    """
    t = pd.to_datetime(times)
    if split.holdout_start is not None:
        start = pd.Timestamp(split.holdout_start)
        tz = getattr(t.dt, "tz", None)
        if tz is not None and start.tzinfo is None:
            start = start.tz_localize(tz)
        elif tz is None and start.tzinfo is not None:
            start = start.tz_convert(None)
        return start
    ordered = np.sort(t.to_numpy())
    idx = min(len(ordered) - 1, int(np.floor(len(ordered) * (1 - split.fraction))))
    return pd.Timestamp(ordered[idx])


@dataclass(frozen=True)
class SegmentPlan:
    """Which segments get their own model and which are served by the fallback, and why."""

    trained: list[str]
    to_fallback: dict[str, str] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return [*self.trained, FALLBACK]


def plan_segments(
    config: PipelineConfig,
    train_counts: Mapping[str, int],
    *,
    declared: Sequence[str] | None = None,
) -> SegmentPlan:
    """Segments with at least ``min_rows`` training rows get a model; the rest, the fallback.

    ``declared`` is the explicit list of segment values (``values: [...]``); ``auto`` takes every
    value seen in the training rows. Declared values absent from the data go to the fallback.
    """
    seg = config.segments
    if seg is None:
        return SegmentPlan(trained=[])
    names = sorted(train_counts) if declared is None else [str(v) for v in declared]
    trained: list[str] = []
    to_fallback: dict[str, str] = {}
    for name in names:
        n = train_counts.get(name, 0)
        if n == 0:
            to_fallback[name] = "no training rows"
        elif n < seg.min_rows:
            to_fallback[name] = f"{n} training rows < min_rows {seg.min_rows}"
        else:
            trained.append(name)
    return SegmentPlan(trained=trained, to_fallback=to_fallback)


def segment_label(segment: str) -> str:
    """A segment as tables show it: the fallback's task is ``(fallback)``."""
    return FALLBACK_LABEL if segment == FALLBACK else segment
