"""Pure planning: steps, the time split, segment tasks, feature encoding and metrics. No I/O."""

from kiln.pipeline.features import FeatureSchema, FeatureSpec
from kiln.pipeline.metrics import HIGHER_IS_BETTER, score
from kiln.pipeline.plan import (
    FALLBACK,
    STEPS,
    SegmentPlan,
    holdout_mask,
    plan_segments,
    time_cutoff,
)

__all__ = [
    "FALLBACK",
    "HIGHER_IS_BETTER",
    "STEPS",
    "FeatureSchema",
    "FeatureSpec",
    "SegmentPlan",
    "holdout_mask",
    "plan_segments",
    "score",
    "time_cutoff",
]
