"""kiln.yaml `deploy:`: the gates a candidate must pass and how a version goes live."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kiln.config.base import Strict as _Strict
from kiln.config.base import parse_duration

__all__ = [
    "ChampionChallengerGate",
    "DataQualityGate",
    "DeployConfig",
    "FeatureAvailabilityGate",
    "GatesConfig",
    "PredictionRange",
    "ReplayGate",
    "RollbackPolicy",
    "ShadowPolicy",
]


class PredictionRange(_Strict):
    min: float | None = None
    max: float | None = None


class DataQualityGate(_Strict):
    enabled: bool = True
    max_fallback_share: float = Field(default=0.2, ge=0, le=1)
    prediction_range: PredictionRange | None = None


class ChampionChallengerGate(_Strict):
    enabled: bool = True
    tolerance: float = Field(default=0.02, ge=0, description="Allowed relative regression.")
    min_rows: int = Field(
        default=5, ge=1, description="Segments with fewer holdout rows are shown, not judged."
    )
    confidence: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="Level of each segment's paired bootstrap interval: a segment fails only"
        " when the whole interval of its regression lies beyond `tolerance`; one that straddles"
        " it is reported as inconclusive. The overall comparison stays a strict point test.",
    )
    resamples: int = Field(
        default=1000, ge=100, le=100_000, description="Bootstrap resamples per segment."
    )
    max_target_changed_share: float | None = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Fail when the target differs on more than this share of the rows that"
        " both versions' data hold (matched by every other column): a target scaled, in other"
        " units or re-labelled on some rows, whose answers move too little for replay to see;"
        " null: off.",
    )
    max_target_spread_change: float | None = Field(
        default=None,
        gt=0,
        description="Fail when the standard deviation of the target over the candidate's"
        " training rows differs from the champion's by more than this share; null (default):"
        " off (an honest retrain on a bad month moves it by ~9% on the flights).",
    )
    fail_on_lost_segments: bool = Field(
        default=True,
        description="Fail when a segment that production answers with its own model is"
        " answered by the candidate's fallback (routed there, or absent from its data).",
    )


class ReplayGate(_Strict):
    enabled: bool = True
    window: int = Field(default=10_000, ge=1, description="Last K captured requests.")
    max_abs_diff: float | None = Field(
        default=None,
        ge=0,
        description="A prediction moving more than this counts as beyond. Unset: "
        "`max_abs_diff_std` x the target's standard deviation at training (regression), "
        "`max_probability_diff` (classification).",
    )
    max_abs_diff_std: float = Field(
        default=0.5,
        gt=0,
        description="When max_abs_diff is unset (regression): the tolerance in standard"
        " deviations of the target at training (the candidate's manifest, else the champion's).",
    )
    max_probability_diff: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="When max_abs_diff is unset (classification): the tolerance on the"
        " probability.",
    )
    max_share_beyond: float = Field(default=0.05, ge=0, le=1)
    fail_on_fallback_segments: bool = Field(
        default=True,
        description="Fail when requests that production answered with a segment's own model"
        " are answered by the candidate's fallback.",
    )


class FeatureAvailabilityGate(_Strict):
    enabled: bool = True
    available: list[str] | None = Field(
        default=None,
        description="Features the callers send at serving time; None: learn it from captures.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"enabled": data} if isinstance(data, bool) else data


class ShadowPolicy(_Strict):
    min_duration: timedelta = timedelta(0)
    min_requests: int = Field(default=0, ge=0)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p99_ratio: float = Field(
        default=2.0, gt=0, description="Shadow p99 latency over production p99, at most."
    )
    max_mean_shift: float | None = Field(
        default=None, ge=0, description="Mean absolute prediction change, at most."
    )

    @field_validator("min_duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)


class RollbackPolicy(_Strict):
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p99_ms: float | None = Field(default=None, gt=0)
    watch: timedelta = timedelta(minutes=30)
    min_requests: int = Field(
        default=20, ge=1, description="Captured requests needed before judging a version."
    )

    @field_validator("watch", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)


class GatesConfig(_Strict):
    data_quality: DataQualityGate = Field(default_factory=DataQualityGate)
    champion_challenger: ChampionChallengerGate = Field(default_factory=ChampionChallengerGate)
    replay: ReplayGate = Field(default_factory=ReplayGate)
    feature_availability: FeatureAvailabilityGate = Field(default_factory=FeatureAvailabilityGate)


class DeployConfig(_Strict):
    auto_promote: bool = False
    gates: GatesConfig = Field(default_factory=GatesConfig)
    shadow: ShadowPolicy = Field(default_factory=ShadowPolicy)
    canary_share: float = Field(
        default=0.0, ge=0, lt=1, description="0: no canary; else the share of requests, < 1."
    )
    rollback: RollbackPolicy = Field(default_factory=RollbackPolicy)
    on_unchanged: Literal["skip", "register"] = Field(
        default="skip",
        description="When the data snapshot, config and code are identical to the production "
        "version's: `skip` registers nothing (the run succeeds with a note; `kiln run --force` "
        "trains anyway), `register` registers a candidate that is never gated nor promoted.",
    )
