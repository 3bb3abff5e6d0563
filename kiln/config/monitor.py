"""kiln.yaml `monitor:`: how production traffic is watched, and what happens when it drifts.

Every pipeline is monitored: without a `monitor:` section the defaults below apply. None of it is
part of the config digest (:attr:`PipelineConfig.digest`): changing a threshold never retrains a
model.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, HttpUrl, field_validator, model_validator

from kiln.config.base import Strict, parse_duration

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DriftConfig",
    "DriftStatistic",
    "FeatureDriftConfig",
    "LabelsConfig",
    "LatencyConfig",
    "LogChannel",
    "MonitorConfig",
    "PerformanceConfig",
    "RetrainConfig",
    "Thresholds",
    "WebhookChannel",
]

DriftStatistic = Literal["psi", "jensen_shannon", "wasserstein", "ks"]

DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "psi": (0.1, 0.25),
    "jensen_shannon": (0.1, 0.2),
    "wasserstein": (0.1, 0.25),
    "ks": (0.1, 0.2),
}
"""(warn, alert) per statistic when none is configured: PSI's usual 0.1 / 0.25 bands; the
Jensen-Shannon distance (base 2, 0..1) and KS (0..1) from Evidently's 0.1 default; Wasserstein
divided by the reference's standard deviation, as PSI's bands."""


class Thresholds(Strict):
    """A figure is ``warn`` at or over ``warn``, ``alert`` at or over ``alert``."""

    warn: float = Field(ge=0)
    alert: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.warn > self.alert:
            raise ValueError(f"warn ({self.warn}) is greater than alert ({self.alert})")
        return self


class FeatureDriftConfig(Strict):
    """One feature's own statistic or thresholds (the others keep the drift defaults)."""

    statistic: DriftStatistic | None = None
    warn: float | None = Field(default=None, ge=0)
    alert: float | None = Field(default=None, ge=0)
    ignore: bool = Field(default=False, description="Never judge this feature's drift.")


class DriftConfig(Strict):
    numeric: DriftStatistic = Field(default="psi", description="Statistic of numeric features.")
    categorical: DriftStatistic = Field(
        default="psi", description="Statistic of categorical features (and the segment column)."
    )
    warn: float | None = Field(
        default=None, ge=0, description="Default: the statistic's usual band (psi 0.1)."
    )
    alert: float | None = Field(
        default=None, ge=0, description="Default: the statistic's usual band (psi 0.25)."
    )
    prediction: bool = Field(default=True, description="Judge the prediction's drift too.")
    alert_by: Literal["pipeline", "feature", "segment"] = Field(
        default="pipeline",
        description="What one drift alert episode covers: the whole pipeline (one episode for"
        " the inputs and one for the prediction, naming every drifted feature and segment),"
        " each feature (across segments), or each feature of each segment. Every figure is"
        " judged and shown either way.",
    )
    features: dict[str, FeatureDriftConfig] = Field(
        default_factory=dict, description="Per feature: its statistic, thresholds, or ignore."
    )

    @field_validator("categorical")
    @classmethod
    def _categorical(cls, v: DriftStatistic) -> DriftStatistic:
        if v == "wasserstein":
            raise ValueError(
                "wasserstein needs ordered values, which categories are not; use psi,"
                " jensen_shannon or ks for categorical features"
            )
        return v

    def thresholds(self, feature: str, kind: str) -> tuple[DriftStatistic, Thresholds]:
        """The statistic and thresholds that judge ``feature`` (of ``kind`` numeric or
        categorical): its own where set, else the kind's statistic and the global bands."""
        own = self.features.get(feature) or FeatureDriftConfig()
        stat: DriftStatistic = own.statistic or (
            self.numeric if kind == "numeric" else self.categorical
        )
        warn, alert = DEFAULT_THRESHOLDS[stat]
        if own.statistic is None or own.statistic == (
            self.numeric if kind == "numeric" else self.categorical
        ):
            warn = self.warn if self.warn is not None else warn
            alert = self.alert if self.alert is not None else alert
        warn = own.warn if own.warn is not None else warn
        alert = own.alert if own.alert is not None else alert
        return stat, Thresholds(warn=min(warn, alert), alert=alert)


class LabelsConfig(Strict):
    """Where the actual outcomes come from, and how they are matched to requests."""

    key: str = Field(
        default="request_id",
        description="request_id (the X-Request-ID the caller sent, or the one Kiln gave), or a"
        " feature whose value identifies the request.",
    )
    column: str | None = Field(
        default=None, description="The label file's column of outcomes (default: the target)."
    )
    source: str | None = Field(
        default=None, description="Where `kiln labels add --query` runs (default: data.source)."
    )
    max_age: timedelta = Field(
        default=timedelta(days=30),
        description="Labels join requests served at most this long before them.",
    )

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)


class PerformanceConfig(Strict):
    """The live primary metric on labelled requests against the version's holdout metric."""

    warn: float = Field(
        default=0.05, ge=0, description="Relative worsening of the metric that warns (0.05: 5%)."
    )
    alert: float = Field(default=0.10, ge=0, description="Relative worsening that alerts.")
    min_labels: int = Field(
        default=100, ge=1, description="Labelled requests a segment needs in a window to be judged."
    )

    @model_validator(mode="after")
    def _ordered(self) -> PerformanceConfig:
        if self.warn > self.alert:
            raise ValueError(f"warn ({self.warn}) is greater than alert ({self.alert})")
        return self


class LatencyConfig(Strict):
    p99_ms: Thresholds | None = Field(
        default=None, description="p99 latency in ms that warns / alerts (default: not judged)."
    )
    error_rate: Thresholds = Field(
        default_factory=lambda: Thresholds(warn=0.01, alert=0.05),
        description="Share of requests answered with an error (status >= 500, or refused).",
    )


class RetrainConfig(Strict):
    on: list[Literal["drift", "performance"]] = Field(
        default_factory=list,
        description="Alerts that start `kiln run --trigger drift|performance` (default: none).",
    )
    cooldown: timedelta = Field(
        default=timedelta(days=1), description="At least this long between two such runs."
    )
    max_per_day: int = Field(default=2, ge=1, description="Such runs per UTC day, at most.")

    @field_validator("cooldown", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)


class LogChannel(Strict):
    type: Literal["log"] = "log"


class WebhookChannel(Strict):
    """A JSON POST (Slack's incoming-webhook format: ``{"text": ...}`` plus the alert)."""

    type: Literal["webhook"] = "webhook"
    url: HttpUrl
    timeout: timedelta = Field(default=timedelta(seconds=5), description="Per attempt.")
    retries: int = Field(
        default=3, ge=0, description="Attempts within one pass before waiting for the next."
    )
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)


Channel = Annotated[LogChannel | WebhookChannel, Field(discriminator="type")]


def _log_only() -> list[LogChannel | WebhookChannel]:
    return [LogChannel()]


class MonitorConfig(Strict):
    enabled: bool = True
    window: timedelta = Field(
        default=timedelta(days=1), description="Length of a window, e.g. 1h or 1d (UTC-aligned)."
    )
    grace: timedelta = Field(
        default=timedelta(minutes=5),
        description="How long after a window closes it is computed: captures still buffered"
        " by servers or uploading land first (a capture that arrives later is not counted).",
    )
    min_rows: int = Field(
        default=100, ge=1, description="Requests a segment needs in a window to be judged."
    )
    consecutive: int = Field(
        default=2, ge=1, description="Windows over a threshold in a row before an alert opens."
    )
    drift: DriftConfig = Field(default_factory=DriftConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    channels: list[Channel] = Field(
        default_factory=_log_only,
        description="Where alerts go: the log (default) and webhooks.",
    )

    @field_validator("grace", mode="before")
    @classmethod
    def _grace(cls, v: Any) -> timedelta:
        return parse_duration(v)

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: Any) -> timedelta:
        window = parse_duration(v)
        if window < timedelta(minutes=1):
            raise ValueError(f"a window of {window} is too short; use 1m or more")
        if timedelta(days=1) % window and window < timedelta(days=1):
            raise ValueError(
                f"a window of {window} does not divide a day; use e.g. 15m, 1h, 6h or 1d"
            )
        return window
