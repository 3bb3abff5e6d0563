"""Pure planning: steps, the time split, segment tasks, feature encoding and metrics. No I/O."""

from kiln.pipeline.features import FeatureSchema, FeatureSpec
from kiln.pipeline.metrics import HIGHER_IS_BETTER, score
from kiln.pipeline.plan import (
    FALLBACK,
    STEPS,
    SegmentPlan,
    plan_segments,
    time_cutoff,
)
from kiln.pipeline.split import Split, holdout_mask, resolve_split

__all__ = [
    "FALLBACK",
    "HIGHER_IS_BETTER",
    "STEPS",
    "FeatureSchema",
    "FeatureSpec",
    "SegmentPlan",
    "Split",
    "holdout_mask",
    "plan_segments",
    "resolve_split",
    "score",
    "time_cutoff",
]
