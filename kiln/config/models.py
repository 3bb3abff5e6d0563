"""pydantic models of kiln.yaml. Unknown keys are refused everywhere (``extra="forbid"``)."""

from __future__ import annotations

import hashlib
import re
import zoneinfo
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from croniter import croniter
from pydantic import Field, field_validator, model_validator

from kiln.config.base import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    Metric,
    Retention,
    parse_duration,
    parse_size,
)
from kiln.config.base import Strict as _Strict
from kiln.config.cost import CostConfig
from kiln.config.deploy import DeployConfig
from kiln.config.monitor import MonitorConfig
from kiln.config.serving import CaptureConfig, ServingConfig, UnseenCategories

__all__ = [
    "CaptureConfig",
    "ChecksConfig",
    "ColumnChecks",
    "CostConfig",
    "DataConfig",
    "DeployConfig",
    "EvaluationConfig",
    "FreshnessCheck",
    "ModelConfig",
    "PipelineConfig",
    "ResourcesConfig",
    "ScheduleConfig",
    "SegmentsConfig",
    "ServingConfig",
    "SplitConfig",
    "SplitKind",
    "TargetConfig",
    "UnseenCategories",
]

_CLASSIFICATION_DEFAULT = ("auc", "logloss", "accuracy")
"""The default metrics of a two-class target; with more classes a run defaults to
``kiln.pipeline.metrics.MULTICLASS_METRICS`` (logloss, accuracy, f1_macro)."""
_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class DataConfig(_Strict):
    """Where the training data comes from."""

    source: str = Field(
        description="A .duckdb file, a parquet/csv file or glob (queried as table `data`), "
        "or any SQLAlchemy URL (postgresql://..., sqlite:///...)."
    )
    snapshot_retention: Retention = Field(
        default=None,
        description="`kiln gc --apply` deletes the data snapshots of runs older than this (e.g."
        " 90d), except those a production, canary, shadow, candidate or blocked version, a"
        " resumable run or a gate's evidence still needs. Unset: kept.",
    )
    query: str | None = Field(
        default=None, description="SQL to run on the source; default: all rows of `data`."
    )
    time_column: str | None = Field(
        default=None,
        description="Timestamp column: the default holdout is its newest rows, and "
        "checks.freshness reads it. Optional: without it the holdout is a seeded random "
        "share of the rows (see evaluation.split).",
    )

    @field_validator("source", "time_column")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v


class ColumnChecks(_Strict):
    not_null: float | None = Field(
        default=None, ge=0, le=1, description="Minimum share of non-null values (0..1)."
    )
    min: float | None = Field(default=None, description="Smallest allowed value.")
    max: float | None = Field(default=None, description="Largest allowed value.")
    allowed: list[str | int | float | bool] | None = Field(
        default=None, min_length=1, description="The only values allowed."
    )
    unique: bool = Field(default=False, description="Every non-null value appears once.")

    @model_validator(mode="after")
    def _range_ordered(self) -> ColumnChecks:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class FreshnessCheck(_Strict):
    max_age: timedelta = Field(description="Newest row of time_column must be this recent.")
    as_of: datetime | None = Field(
        default=None, description="Reference time (default: now). Useful for historical data."
    )

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)


class ChecksConfig(_Strict):
    min_rows: int | None = Field(default=None, ge=1)
    freshness: FreshnessCheck | None = None
    columns: dict[str, ColumnChecks] = Field(default_factory=dict)


class TargetConfig(_Strict):
    column: str
    task: Literal["regression", "classification"] = Field(
        default="regression",
        description="regression (a number) or classification: a 0/1 or true/false target, two"
        " labels (binary; the later one in sort order is the positive class), or more than two"
        " labels (multiclass: the model answers each class's probability).",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data


class SegmentsConfig(_Strict):
    column: str = Field(description="Column whose values name the segments.")
    values: Literal["auto"] | list[str | int] = Field(
        default="auto", description="`auto` (every value seen) or the explicit list."
    )
    min_rows: int = Field(
        default=100, ge=1, description="Segments with fewer training rows use the fallback."
    )
    fallback: Literal["global"] = Field(
        default="global", description="The fallback model: trained on all rows."
    )
    on_segment_failure: Literal["fallback", "fail"] = "fallback"
    route_worse_to_fallback: bool = Field(
        default=False,
        description="A segment whose model scores worse than the fallback on the segment's own "
        "holdout rows (primary metric) is served by the fallback, with the reason recorded in "
        "the package. False: it is served by its own model and the run warns.",
    )

    @field_validator("values")
    @classmethod
    def _unique_values(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("list of segment values is empty; use `auto` or name them")
            seen = [x for x in v if v.count(x) > 1]
            if seen:
                raise ValueError(f"segment values repeat: {sorted(set(map(str, seen)))}")
        return v


class ModelConfig(_Strict):
    estimator: str | None = Field(
        default=None, description="Dotted path of an estimator class, e.g. lightgbm.LGBMRegressor."
    )
    params: dict[str, Any] = Field(default_factory=dict)
    train: str | None = Field(
        default=None, description="`module:function` of a train function, beside kiln.yaml."
    )

    @model_validator(mode="after")
    def _one_way(self) -> ModelConfig:
        if (self.estimator is None) == (self.train is None):
            raise ValueError("give exactly one of `estimator` or `train`")
        if self.estimator is not None and not _DOTTED.match(self.estimator):
            raise ValueError(
                f"estimator {self.estimator!r} is not a dotted path like lightgbm.LGBMRegressor"
            )
        if self.train is not None and not _ENTRYPOINT.match(self.train):
            raise ValueError(f"train {self.train!r} is not of the form module:function")
        if self.train is not None and self.params:
            raise ValueError("`params` go with `estimator`; a train function sets its own")
        return self


SplitKind = Literal["time", "random", "hash"]


class SplitConfig(_Strict):
    """How the holdout rows are chosen; they are never trained on."""

    kind: SplitKind | None = Field(
        default=None,
        description="`time`: the newest rows of data.time_column (default when it is set); "
        "`random`: a seeded random share of the rows (default without a time column); "
        "`hash`: rows whose `key` hashes below the fraction, stable across retrains.",
    )
    holdout_fraction: float | None = Field(
        default=None, gt=0, lt=1, description="Share of the rows held out (default 0.2)."
    )
    holdout_start: datetime | None = Field(
        default=None, description="kind time: rows at or after this time form the holdout."
    )
    seed: int | None = Field(default=None, ge=0, description="kind random: the seed (default 0).")
    key: str | None = Field(
        default=None,
        description="kind hash: the column whose value decides the side (e.g. customer_id), "
        "so that a key stays in the holdout as rows are added.",
    )

    @model_validator(mode="after")
    def _one(self) -> SplitConfig:
        if self.holdout_fraction is not None and self.holdout_start is not None:
            raise ValueError("give holdout_fraction or holdout_start, not both")
        if self.holdout_start is not None and self.kind not in (None, "time"):
            raise ValueError(f"holdout_start goes with kind time, not kind {self.kind}")
        if self.seed is not None and self.kind != "random":
            raise ValueError("seed goes with kind random")
        if self.kind == "hash" and not (self.key and self.key.strip()):
            raise ValueError("kind hash needs `key`: the column to hash, e.g. key: customer_id")
        if self.key is not None and self.kind != "hash":
            raise ValueError("key goes with kind hash")
        return self

    @property
    def fraction(self) -> float:
        return 0.2 if self.holdout_fraction is None else self.holdout_fraction


class EvaluationConfig(_Strict):
    split: SplitConfig = Field(default_factory=SplitConfig)
    refit: bool = Field(
        default=False,
        description="After evaluation, refit every segment model and the fallback on all rows "
        "(train + holdout), so the served model has seen the newest rows. The package's "
        "metrics stay those of the first fit on the holdout. False: the served model is "
        "exactly the one the metrics describe.",
    )
    metrics: list[Metric] | None = Field(default=None, min_length=1)
    primary: Metric | None = None


class ResourcesConfig(_Strict):
    cpus: int | None = Field(default=None, ge=1, description="Parallel tasks (default: all).")
    memory: int | None = Field(default=None, description="Memory per task, e.g. 2GiB.")

    @field_validator("memory", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int | None:
        return None if v is None else parse_size(v)


class ScheduleConfig(_Strict):
    cron: str = Field(description="Five-field cron expression, e.g. '0 3 * * *'.")
    timezone: str = "UTC"
    catchup: Literal["skip", "once"] = "skip"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"cron": data} if isinstance(data, str) else data

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(
                f"{v!r} is not a cron expression; expected 5 fields 'minute hour day month "
                "weekday', e.g. '0 3 * * *' for 03:00 every day"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(
                f"unknown time zone {v!r}; use an IANA name like 'Europe/Paris'"
            ) from e
        return v


class PipelineConfig(_Strict):
    """One kiln.yaml."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    owner: str = Field(min_length=1)
    description: str = ""
    data: DataConfig
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    target: TargetConfig
    features: list[str] = Field(min_length=1)
    segments: SegmentsConfig | None = None
    model: ModelConfig
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    schedule: ScheduleConfig | None = None
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    monitor: MonitorConfig = Field(
        default_factory=MonitorConfig,
        description="How production traffic is watched (every pipeline is; this tunes it).",
    )
    cost: CostConfig = Field(default_factory=CostConfig)

    @field_validator("features")
    @classmethod
    def _unique_features(cls, v: list[str]) -> list[str]:
        dup = sorted({f for f in v if v.count(f) > 1})
        if dup:
            raise ValueError(f"features repeat: {dup}")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> PipelineConfig:
        if self.target.column in self.features:
            raise ValueError(
                f"target {self.target.column!r} is also listed in features; remove it there"
            )
        allowed = REGRESSION_METRICS if self.target.task == "regression" else CLASSIFICATION_METRICS
        wrong = [m for m in self.metrics if m not in allowed]
        if wrong:
            raise ValueError(
                f"metrics {wrong} do not fit a {self.target.task} target; use {list(allowed)}"
            )
        self._coherent_split()
        self._coherent_monitor()
        if self.primary_metric not in self.metrics:
            raise ValueError(
                f"evaluation.primary {self.primary_metric!r} is not in metrics {self.metrics}"
            )
        return self

    def _coherent_split(self) -> None:
        if self.data.time_column is not None:
            return
        split = self.evaluation.split
        if split.kind == "time" or split.holdout_start is not None:
            field = "kind" if split.kind == "time" else "holdout_start"
            raise ValueError(
                f"evaluation.split.{field}: a time split needs data.time_column; set it, or "
                "use kind: random or kind: hash"
            )
        if self.checks.freshness is not None:
            raise ValueError(
                "checks.freshness: freshness reads data.time_column, which is not set; set it, "
                "or remove checks.freshness"
            )

    def _coherent_monitor(self) -> None:
        unknown = sorted(set(self.monitor.drift.features) - set(self.features))
        if unknown:
            raise ValueError(
                f"monitor.drift.features names {unknown}, which are not features of this"
                f" pipeline; use one of {self.features}"
            )
        key = self.monitor.labels.key
        if key != "request_id" and key not in self.features:
            raise ValueError(
                f"monitor.labels.key {key!r} is neither request_id nor a feature (a request holds"
                " only its features); use request_id, or one of the features"
            )

    @property
    def split_kind(self) -> SplitKind:
        """The split in effect: the configured kind, else time with a time column, else random."""
        kind = self.evaluation.split.kind
        if kind is not None:
            return kind
        return "time" if self.data.time_column is not None else "random"

    @property
    def metrics(self) -> list[str]:
        if self.evaluation.metrics:
            return list(self.evaluation.metrics)
        if self.target.task == "regression":
            return list(REGRESSION_METRICS)
        return list(_CLASSIFICATION_DEFAULT)

    @property
    def primary_metric(self) -> str:
        return self.evaluation.primary or self.metrics[0]

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the validated config (lineage); ``monitor``,
        ``cost`` and the retention settings are left out: how traffic is watched, what it may
        cost and how long its data is kept do not change the model."""
        doc = self.model_dump(
            mode="json",
            exclude={
                "monitor": True,
                "cost": True,
                "capture": {"retention"},
                "data": {"snapshot_retention"},
            },
        )
        blob = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(blob).hexdigest()
