"""What a run is asked to do besides the whole loop: an experiment, a few segments retrained on
top of production, or the steps up to one of them only (``kiln run --experiment/--segment/--step``).

A partial run (``segments``) trains only the named segments, on fresh data, and packs them with
the production version's other segment models and fallback (the same artifacts, so the same
digests). Those models keep production's feature encoding, so the new segment models are
trained with it too; their metrics are recomputed on the new holdout, so the package's metrics
describe every model on the same rows, like any other version's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from kiln.config.loader import LoadedConfig
from kiln.config.models import PipelineConfig
from kiln.errors import ConfigError, NotFoundError, SchemaError
from kiln.pipeline.features import FeatureSchema
from kiln.pipeline.metrics import score
from kiln.pipeline.plan import FALLBACK, STEPS, SegmentPlan
from kiln.registry.adapters import predict_fn
from kiln.registry.package import LoadedPackage, load_package
from kiln.runs.data import Prepared, run_metrics
from kiln.runs.packaging import TaskInfo
from kiln.stores import Stores

__all__ = [
    "STOP_STEPS",
    "BasePackage",
    "RunOptions",
    "StopStep",
    "check_experiment_name",
    "record_skipped",
    "snapshot_to_reuse",
]

StopStep = Literal["extract", "check", "train"]
STOP_STEPS: tuple[StopStep, ...] = ("extract", "check", "train")
_EXPERIMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_experiment_name(name: str) -> str:
    if not _EXPERIMENT.match(name):
        raise ConfigError(
            f"--experiment {name!r} is not a valid experiment name",
            hint="use 1-63 letters, digits, '.', '_' or '-', e.g. --experiment more-trees",
        )
    return name


@dataclass(frozen=True)
class RunOptions:
    experiment: str | None = None
    """Register an experiment version: evaluated against production, never deployed."""
    segments: tuple[str, ...] = ()
    """Retrain only these segments; pack them with production's other models."""
    stop_after: StopStep | None = None
    """Run the steps up to this one only: nothing is packaged or registered."""
    from_run: str | None = None
    """With ``stop_after`` check or train: reuse this run's data snapshot."""
    force: bool = False
    """Train and register even when data, config and code are identical to production's."""
    alert_id: int | None = None
    """The alert that started this run (``--trigger drift|performance --alert ID``)."""

    def to_details(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items() if v}

    @classmethod
    def from_details(cls, details: dict[str, Any] | None) -> RunOptions:
        d = dict(details or {})
        return cls(
            experiment=d.get("experiment"),
            segments=tuple(d.get("segments") or ()),
            stop_after=d.get("stop_after"),
            from_run=d.get("from_run"),
            force=bool(d.get("force")),
        )

    def lineage(self, base: BasePackage | None) -> dict[str, Any]:
        """What the version's lineage records about how it was made."""
        extra: dict[str, Any] = {}
        if self.experiment:
            extra["experiment"] = self.experiment
        if base is not None:
            extra["partial"] = {"retrained": list(self.segments), "base_version": base.version}
        return extra


@dataclass(frozen=True)
class BasePackage:
    """The production version a partial run packs its new segment models with."""

    version: int
    package: LoadedPackage

    @property
    def manifest(self) -> dict[str, Any]:
        return self.package.manifest

    @classmethod
    def of_production(cls, stores: Stores, loaded: LoadedConfig) -> BasePackage:
        """The production version of the pipeline, its package loaded (digests checked)."""
        cfg = loaded.config
        with stores.metadata.read() as uow:
            found = uow.versions.by_stage(cfg.name, "production")
        if not found:
            raise NotFoundError(
                f"--segment needs a production version of {cfg.name!r} to pack the other"
                " segments from, and there is none",
                hint="run the whole pipeline first (`kiln run kiln.yaml`) and promote it",
            )
        if cfg.segments is None:
            raise ConfigError(
                f"--segment: pipeline {cfg.name!r} has no segments",
                hint="`kiln run kiln.yaml` retrains its one model",
            )
        v = found[0]
        package = load_package(stores.content, v.manifest_digest, label=f"{cfg.name} v{v.version}")
        return cls(v.version, package)

    def plan(self, segments: tuple[str, ...], where: str) -> SegmentPlan:
        """Production's plan with ``segments`` trained anew."""
        m = self.manifest
        known = {*m["models"], *m["routed_to_fallback"]}
        unknown = [s for s in segments if s not in known]
        if unknown:
            raise ConfigError(
                f"{where}: --segment {', '.join(unknown)}: not a segment of production"
                f" v{self.version} (segments: {', '.join(sorted(known)) or 'none'})",
                hint="name a segment of the production version; a new segment needs a full run",
            )
        trained = sorted({*m["models"], *segments})
        to_fallback = {
            k: v["reason"] for k, v in m["routed_to_fallback"].items() if k not in segments
        }
        return SegmentPlan(trained=trained, to_fallback=to_fallback)

    def schema(self, loaded: LoadedConfig) -> FeatureSchema:
        """Production's feature encoding; the config must still name the same features."""
        schema = FeatureSchema.from_dict(self.manifest["features"])
        cfg = loaded.config
        if schema.names != list(cfg.features) or self.manifest["task"] != cfg.target.task:
            raise SchemaError(
                f"{loaded.where('features')}: features or task changed since production"
                f" v{self.version} ({', '.join(schema.names)}; {self.manifest['task']}): its"
                " other segment models cannot be packed with new ones",
                hint="run the whole pipeline (without --segment) to retrain every segment",
            )
        return schema

    def check_classes(self, loaded: LoadedConfig, classes: list[str] | None) -> None:
        """Production's models answer production's classes: the new data must have the same."""
        before = self.manifest.get("classes")
        if before == classes:
            return
        target = loaded.config.target.column
        raise SchemaError(
            f"{loaded.where('target')}: the classes of {target!r} changed since production"
            f" v{self.version} (from {_labels(before)} to {_labels(classes)}): its other"
            " segment models answer the old classes and cannot be packed with new ones",
            hint="run the whole pipeline (without --segment) to retrain every segment on the"
            " new classes",
        )

    def infos(self, prep: Prepared, cfg: PipelineConfig, keep: list[str]) -> dict[str, TaskInfo]:
        """Production's models ``keep`` (and its fallback), scored on the new holdout with the
        run's metrics (one probability per class for a multiclass target)."""
        m, pkg, now = self.manifest, self.package, datetime.now(UTC)
        metrics = run_metrics(cfg, prep.classes)[0]
        k = len(prep.classes) if prep.multiclass and prep.classes else None
        out: dict[str, TaskInfo] = {}
        for key in [*keep, FALLBACK]:
            ref = m["fallback"] if key == FALLBACK else m["models"][key]
            model = pkg.fallback if key == FALLBACK else pkg.models[key]
            rows = prep.holdout if key == FALLBACK else (prep.segments == key) & prep.holdout
            idx = np.flatnonzero(rows)
            pred = np.empty((0, k) if k else 0)
            if len(idx):
                fn = predict_fn(model, m["task"], prep.schema.names, n_classes=k)
                pred = np.asarray(fn(prep.X[idx]), dtype=np.float64)
            out[key] = TaskInfo(
                key=key, ok=True, hold_idx=idx, started_at=now, finished_at=now,
                digest=ref["sha256"], metrics=score(metrics, prep.y[idx], pred),
                holdout_pred=pred, rows_train=ref["rows_train"], rows_holdout=len(idx),
                model_type=ref["model_type"],
            )  # fmt: skip
        return out


def snapshot_to_reuse(stores: Stores, pipeline: str, run_id: str | None) -> tuple[str, str]:
    """The run whose data snapshot ``--step check|train`` reuses (``run_id``, or the pipeline's
    latest run that has one), and the snapshot's digest."""
    with stores.metadata.read() as uow:
        runs = [uow.runs.get(run_id)] if run_id else uow.runs.list(pipeline, limit=200)
    for run in runs:
        if run.data_digest and run.pipeline == pipeline:
            return run.id, run.data_digest
    raise NotFoundError(
        f"--step: run {run_id} has no data snapshot of {pipeline!r} to reuse"
        if run_id
        else f"--step: no run of {pipeline!r} has a data snapshot to reuse",
        hint="`kiln run kiln.yaml --step extract` takes one; `kiln runs list` shows runs",
    )


def _labels(classes: list[str] | None) -> str:
    return ", ".join(classes) if classes else "0 and 1"


def record_skipped(stores: Stores, run_id: str, after: str, note: dict[str, Any]) -> str:
    """The steps after ``after`` are recorded as skipped (``note``: their details), the run as
    succeeded without a version, and the pipeline's lock is released; returns the pipeline."""
    with stores.metadata.unit_of_work() as uow:
        pipeline = uow.runs.get(run_id).pipeline
        for name in STEPS[STEPS.index(after) + 1 :]:
            uow.steps.start(run_id, name)
            uow.steps.finish(
                run_id, name, "skipped", wall_seconds=0.0, cpu_seconds=0.0,
                peak_memory_bytes=0, details=note,
            )  # fmt: skip
        uow.runs.mark_finished(run_id, "succeeded")
        uow.locks.release(pipeline, run_id)
    return pipeline
