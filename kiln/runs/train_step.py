"""The train step of a run: one task per segment (and the fallback), fanned out on an executor.

The rows are split per segment into training and holdout rows, the planner decides which
segments get their own model, the tasks a previous attempt of the run finished are reused, and
the others are trained longest first; each finished task is recorded as it finishes, so a
resumed run retrains only what did not finish. What failed is then handled by the pipeline's
``segments.on_segment_failure`` policy (:func:`apply_failures`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kiln.config.loader import LoadedConfig
from kiln.errors import TrainingError
from kiln.executors import Executor
from kiln.pipeline.plan import FALLBACK, SegmentPlan, plan_segments
from kiln.runs.data import Prepared, run_metrics
from kiln.runs.packaging import TaskInfo
from kiln.runs.reporting import Reporter
from kiln.runs.training import TrainSpec, TrainTask, train_segment
from kiln.stores import Stores

__all__ = ["SegmentsTrained", "apply_failures", "preload", "task_rows", "train_segments"]


@dataclass(frozen=True)
class SegmentsTrained:
    """What the train step trained or reused, before the failure policy is applied."""

    plan: SegmentPlan
    infos: dict[str, TaskInfo]
    """Per task that succeeded (in this attempt or a previous one)."""
    failed: dict[str, str]
    """Per task that failed in this attempt: its error."""
    reused: int
    """Tasks a previous attempt of the run finished."""


def train_segments(
    loaded: LoadedConfig,
    run_id: str,
    prep: Prepared,
    executor: Executor,
    *,
    stores: Stores,
    reporter: Reporter,
    only: Sequence[str] | None = None,
) -> SegmentsTrained:
    """Train every task of the plan that no previous attempt finished, recording each.

    ``only``: train these segments alone (not the fallback); each must have enough rows."""
    cfg = loaded.config
    train_idx, hold_idx = task_rows(prep)
    declared = None
    if cfg.segments is not None and isinstance(cfg.segments.values, list):
        declared = [str(v) for v in cfg.segments.values]
    counts = {k: len(v) for k, v in train_idx.items() if k != FALLBACK}
    plan = plan_segments(cfg, counts, declared=declared)
    if only is not None:
        plan = _only(plan, only)
    spec = _train_spec(loaded, prep, executor)
    with stores.metadata.unit_of_work() as uow:
        done = uow.tasks.succeeded(run_id)
    infos: dict[str, TaskInfo] = {}
    keys = plan.tasks if only is None else list(plan.trained)
    for key in keys:
        rec = done.get(key)
        # a refit model saw its holdout: its holdout predictions cannot be recomputed from it,
        # so with evaluation.refit a resumed run trains such a task again
        if spec.refit or rec is None or not rec.artifact_digest:
            continue
        if stores.content.exists(rec.artifact_digest):
            infos[key] = TaskInfo.from_record(rec, stores.content, spec, prep, hold_idx[key])
    todo = sorted(
        (k for k in keys if k not in infos), key=lambda k: -len(train_idx[k])
    )  # longest first: the fallback does not become the tail of the run
    tasks = [
        (k, TrainTask(k, spec, prep.X[train_idx[k]], prep.y[train_idx[k]],
                      prep.X[hold_idx[k]], prep.y[hold_idx[k]]))
        for k in todo
    ]  # fmt: skip
    reporter.tasks_started(total=len(keys), done=len(infos))
    failed: dict[str, str] = {}
    for outcome in executor.map(train_segment, tasks):
        info = TaskInfo.from_outcome(outcome, stores.content, hold_idx[outcome.key])
        with stores.metadata.unit_of_work() as uow:
            uow.tasks.record(run_id, outcome.key, **info.record_fields())
        if info.ok:
            infos[outcome.key] = info
        else:
            failed[outcome.key] = info.error or "failed"
        reporter.task_done(outcome.key, info.ok)
    return SegmentsTrained(plan, infos, failed, reused=len(keys) - len(todo))


def _only(plan: SegmentPlan, only: Sequence[str]) -> SegmentPlan:
    small = {k: plan.to_fallback.get(k, "no training rows") for k in only if k not in plan.trained}
    if small:
        listed = "; ".join(f"{k}: {why}" for k, why in sorted(small.items()))
        raise TrainingError(
            f"--segment cannot train {', '.join(sorted(small))} on this data ({listed})",
            hint="check segments.min_rows and the data of that segment",
        )
    return SegmentPlan(trained=sorted(only))


def task_rows(prep: Prepared) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per segment (and the fallback, over all rows): the row indices it trains on and the
    ones it is evaluated on. A held-out row is never a training row of any task."""
    groups: dict[str, np.ndarray] = {
        str(k): np.asarray(v)
        for k, v in pd.Series(prep.segments).groupby(prep.segments, dropna=True).indices.items()
    }
    train_idx = {k: idx[~prep.holdout[idx]] for k, idx in groups.items()}
    hold_idx = {k: idx[prep.holdout[idx]] for k, idx in groups.items()}
    train_idx[FALLBACK] = np.flatnonzero(~prep.holdout)
    hold_idx[FALLBACK] = np.flatnonzero(prep.holdout)
    return train_idx, hold_idx


def preload(loaded: LoadedConfig) -> tuple[str, ...]:
    """Modules the workers import while the data is still being extracted."""
    model = loaded.config.model
    extra = model.estimator.rpartition(".")[0] if model.estimator else ""
    return ("kiln.runs.training", *([extra] if extra else []))


def _train_spec(loaded: LoadedConfig, prep: Prepared, executor: Executor) -> TrainSpec:
    cfg = loaded.config
    cpus = cfg.resources.cpus or os.cpu_count() or 1
    return TrainSpec(
        task=cfg.target.task,
        features=prep.schema.names,
        categorical=prep.schema.categorical_indices,
        metrics=run_metrics(cfg, prep.classes)[0],
        base_dir=str(loaded.base_dir.resolve()),
        where=loaded.where("model"),
        estimator=cfg.model.estimator,
        params=dict(cfg.model.params),
        train=cfg.model.train,
        threads=max(1, cpus // max(1, executor.workers)),
        classes=prep.classes,
        refit=cfg.evaluation.refit,
    )


def apply_failures(policy: str, plan: SegmentPlan, failed: dict[str, str]) -> SegmentPlan:
    """The plan once the failed tasks are handled by ``policy`` (``fail`` raises; otherwise the
    failed segments are answered by the fallback). A failed fallback always raises."""
    if FALLBACK in failed:
        raise TrainingError(
            f"the fallback model failed to train: {_first_line(failed[FALLBACK])}",
            hint="every version needs its fallback; see `kiln runs show` for the task's log",
        )
    if not failed:
        return plan
    if policy == "fail":
        listed = "; ".join(f"{k}: {_first_line(v)}" for k, v in sorted(failed.items()))
        raise TrainingError(
            f"{len(failed)} segment(s) failed to train: {listed}",
            hint="fix the cause, then `kiln run --resume RUN` retrains only those; or set "
            "segments.on_segment_failure: fallback",
        )
    to_fallback = dict(plan.to_fallback)
    to_fallback |= {k: f"training failed: {_first_line(v)}" for k, v in failed.items()}
    return SegmentPlan(
        trained=[k for k in plan.trained if k not in failed], to_fallback=to_fallback
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
