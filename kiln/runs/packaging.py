"""From finished train tasks to a version's manifest: metrics, lineage, environment, profile."""

from __future__ import annotations

import pickle
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from kiln.config.loader import LoadedConfig
from kiln.executors import TaskOutcome
from kiln.pipeline.metrics import compare_to_fallback, score
from kiln.pipeline.plan import FALLBACK, SegmentPlan
from kiln.registry.adapters import predict_fn
from kiln.registry.package import MANIFEST_FORMAT, environment_lock
from kiln.runs.data import Prepared, run_metrics
from kiln.runs.reference import TrainingProfiles, with_predictions
from kiln.runs.training import TrainResult, TrainSpec
from kiln.runs.unchanged import model_distributions
from kiln.stores.content import ContentStore

__all__ = ["TaskInfo", "TrainedRun", "build_manifest", "fallback_warnings"]


@dataclass(frozen=True)
class TaskInfo:
    key: str
    ok: bool
    hold_idx: np.ndarray
    started_at: datetime
    finished_at: datetime
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0
    base_memory_bytes: int | None = None
    digest: str | None = None
    metrics: dict[str, Any] | None = None
    holdout_pred: np.ndarray | None = None
    rows_train: int = 0
    rows_holdout: int = 0
    model_type: str = ""
    rows_train_refit: int | None = None
    error: str | None = None
    log: str = ""

    @classmethod
    def from_outcome(
        cls, outcome: TaskOutcome[TrainResult], content: ContentStore, hold_idx: np.ndarray
    ) -> TaskInfo:
        u = outcome.usage
        common: dict[str, Any] = {
            "key": outcome.key, "hold_idx": hold_idx, "started_at": outcome.started_at,
            "finished_at": outcome.finished_at, "wall_seconds": u.wall_seconds,
            "cpu_seconds": u.cpu_seconds, "peak_memory_bytes": u.peak_memory_bytes,
            "base_memory_bytes": u.base_memory_bytes, "log": outcome.log,
        }  # fmt: skip
        r = outcome.value
        if not outcome.ok or r is None:
            return cls(ok=False, error=outcome.error or "no result", **common)
        return cls(
            ok=True,
            digest=content.put(r.artifact),
            metrics=r.metrics,
            holdout_pred=r.holdout_pred,
            rows_train=r.rows_train,
            rows_holdout=r.rows_holdout,
            model_type=r.model_type,
            rows_train_refit=r.rows_train_refit,
            **common,
        )

    @classmethod
    def from_record(
        cls, rec: Any, content: ContentStore, spec: TrainSpec, prep: Prepared, hold_idx: np.ndarray
    ) -> TaskInfo:
        """A task finished by an earlier attempt: reload its model to score the holdout again."""
        model = pickle.loads(content.get(rec.artifact_digest, what=f"segment {rec.segment!r}"))
        fn = predict_fn(model, spec.task, spec.features, n_classes=spec.n_classes)
        k = spec.n_classes
        pred = fn(prep.X[hold_idx]) if len(hold_idx) else np.empty((0, k) if k else 0)
        return cls(
            key=rec.segment, ok=True, hold_idx=hold_idx, started_at=rec.started_at,
            finished_at=rec.finished_at, wall_seconds=rec.wall_seconds,
            cpu_seconds=rec.cpu_seconds, peak_memory_bytes=rec.peak_memory_bytes,
            base_memory_bytes=rec.base_memory_bytes, digest=rec.artifact_digest,
            metrics=rec.metrics,
            holdout_pred=np.asarray(pred, dtype=np.float64),
            rows_train=rec.rows_train, rows_holdout=rec.rows_holdout,
            model_type=type(model).__module__ + "." + type(model).__qualname__, log=rec.log or "",
        )  # fmt: skip

    def record_fields(self) -> dict[str, Any]:
        return {
            "status": "succeeded" if self.ok else "failed",
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "base_memory_bytes": self.base_memory_bytes,
            "rows_train": self.rows_train,
            "rows_holdout": self.rows_holdout,
            "metrics": self.metrics or {},
            "artifact_digest": self.digest,
            "error": self.error,
            "log": self.log,
        }

    def ref(self) -> dict[str, Any]:
        refit = {} if self.rows_train_refit is None else {"rows_train_refit": self.rows_train_refit}
        return {
            "sha256": self.digest,
            "model_type": self.model_type,
            "metrics": self.metrics,
            "rows_train": self.rows_train,
            "rows_holdout": self.rows_holdout,
            **refit,
            "usage": {
                "wall_seconds": round(self.wall_seconds, 4),
                "cpu_seconds": round(self.cpu_seconds, 4),
                "peak_memory_bytes": self.peak_memory_bytes,
            },
        }


@dataclass(frozen=True)
class TrainedRun:
    """Everything a run has once its train step is over: what packaging works from."""

    loaded: LoadedConfig
    run_id: str
    prep: Prepared
    plan: SegmentPlan
    infos: dict[str, TaskInfo]
    data_digest: str
    profile: Future[TrainingProfiles]
    """The reference profile and histograms, computed on a thread while the segments train."""
    code_digest: str | None = None
    unchanged_from: int | None = None
    """The production version this run is identical to (``deploy.on_unchanged: register``)."""


def build_manifest(run: TrainedRun, code_revision: str | None) -> dict[str, Any]:
    loaded, run_id, prep, plan, infos = run.loaded, run.run_id, run.prep, run.plan, run.infos
    data_digest = run.data_digest
    cfg = loaded.config
    names, primary = run_metrics(cfg, prep.classes)
    y = prep.y
    fb = infos[FALLBACK]
    width = (len(prep.classes),) if prep.multiclass and prep.classes else ()
    fb_full = np.full((len(y), *width), np.nan)
    fb_full[fb.hold_idx] = fb.holdout_pred if fb.holdout_pred is not None else np.nan
    routed = fb_full.copy()

    route_worse = cfg.segments is not None and cfg.segments.route_worse_to_fallback
    models: dict[str, Any] = {}
    to_fallback: dict[str, Any] = {}
    for seg in plan.trained:
        info = infos[seg]
        fb_metrics = score(names, y[info.hold_idx], fb_full[info.hold_idx])
        own = (info.metrics or {}).get(primary)
        versus = compare_to_fallback(primary, own, fb_metrics.get(primary), len(info.hold_idx))
        if route_worse and versus.verdict == "worse":
            to_fallback[seg] = {
                "reason": versus.reason,
                "rows_holdout": len(info.hold_idx),
                "fallback_metrics": fb_metrics,
                "own_metrics": info.metrics,
            }
            continue  # its holdout rows keep the fallback's predictions in the routed metric
        routed[info.hold_idx] = info.holdout_pred if info.holdout_pred is not None else np.nan
        models[seg] = info.ref() | {"fallback_metrics": fb_metrics, "vs_fallback": versus.to_dict()}
    for seg, reason in sorted(plan.to_fallback.items()):
        idx = np.flatnonzero((prep.segments == seg) & prep.holdout)
        to_fallback[seg] = {
            "reason": reason,
            "rows_holdout": len(idx),
            "fallback_metrics": score(names, y[idx], fb_full[idx]),
        }
    hold = fb.hold_idx
    metrics = {
        "primary": primary,
        "overall": score(names, y[hold], routed[hold]),
        "fallback_only": score(names, y[hold], fb_full[hold]),
        "segments": len(models),
    }
    lineage: dict[str, Any] = {
        "run_id": run_id,
        "config_digest": cfg.digest,
        "data_digest": data_digest,
        "rows": prep.rows(),
        "code_revision": code_revision,
        "source": cfg.data.source,
        "query": cfg.data.query,
        "time_column": cfg.data.time_column,
        "holdout_start": prep.split.holdout_start.isoformat() if prep.split.holdout_start else None,
        "split": prep.split.to_dict(),
        "refit": cfg.evaluation.refit,
        "code_digest": run.code_digest,
    }
    if run.unchanged_from is not None:
        lineage["unchanged_from"] = run.unchanged_from
    profiles = run.profile.result()
    return {
        "format": MANIFEST_FORMAT,
        "pipeline": cfg.name,
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(),
        "task": cfg.target.task,
        "target": cfg.target.column,
        **({} if prep.classes is None else {"classes": list(prep.classes)}),
        "segment_column": cfg.segments.column if cfg.segments else None,
        "features": prep.schema.to_dict(),
        "models": models,
        "fallback": fb.ref(),
        "routed_to_fallback": dict(sorted(to_fallback.items())),
        "metrics": metrics,
        "evaluation": _evaluation_note(cfg.evaluation.refit),
        "lineage": lineage,
        "environment": environment_lock(model_distributions(cfg.model.estimator)),
        "reference_profile": profiles.profile,
        "reference": with_predictions(profiles.features, prep, routed, primary=primary),
        "serving": {
            "unseen_categories": cfg.serving.unseen_categories,
            "max_text_length": cfg.serving.max_text_length,
        },
    }


def _evaluation_note(refit: bool) -> dict[str, Any]:
    """What the metrics describe; a gate that scores this version on its holdout reads it."""
    if not refit:
        return {
            "refit": False,
            "served_model_saw_holdout": False,
            "metrics": "holdout metrics of the served models, which never saw those rows",
        }
    return {
        "refit": True,
        "served_model_saw_holdout": True,
        "metrics": "holdout metrics of the first fit; the served models were then refit on "
        "train + holdout rows (rows_train_refit), so a score on the holdout is optimistic",
    }


def fallback_warnings(manifest: dict[str, Any]) -> list[str]:
    """What a run says about segments whose model lost to the fallback on their holdout."""
    out: list[str] = []
    for seg, ref in sorted(manifest["models"].items()):
        versus = ref.get("vs_fallback") or {}
        if versus.get("verdict") == "worse":
            out.append(
                f"segment {seg!r}: its model is {versus['reason']}; it serves anyway "
                "(segments.route_worse_to_fallback: true serves it by the fallback)"
            )
    for seg, info in sorted(manifest["routed_to_fallback"].items()):
        if "own_metrics" in info:
            out.append(f"segment {seg!r} is served by the fallback: its model is {info['reason']}")
    return out
