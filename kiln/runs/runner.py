"""The run lifecycle: extract -> check -> train x segment -> package -> register.

This module and its train step (``kiln.runs.train_step``) are the only ones that join the
planner, an executor and the stores. Registration is one transaction at the very end, so a run
killed at any point leaves nothing half-registered; every finished segment is recorded as it
finishes, so ``resume`` retrains only what did not finish.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from kiln.config.loader import LoadedConfig, parse_config
from kiln.errors import ConfigError, KilnError, SourceError
from kiln.executors import Executor, make_executor
from kiln.pipeline.plan import STEPS, SegmentPlan
from kiln.registry.ownership import check_owner
from kiln.registry.package import save_manifest
from kiln.runs.data import Prepared, prepare, where_field
from kiln.runs.options import (
    BasePackage,
    RunOptions,
    StopStep,
    record_skipped,
    snapshot_to_reuse,
)
from kiln.runs.packaging import TaskInfo, TrainedRun, build_manifest, fallback_warnings
from kiln.runs.preflight import check_importable
from kiln.runs.probe import numeric_text_warnings, open_configured_source
from kiln.runs.reference import training_profiles
from kiln.runs.register import (
    Releaser,
    register_step,
    release_only,
    release_step,
)
from kiln.runs.reporting import NullReporter, Reporter, host_and_pid
from kiln.runs.result import RunResult, StoppedRun
from kiln.runs.steps import (
    LOCK_STALE_AFTER,
    Heartbeat,
    code_revision,
    finish_run,
    interruption,
    step,
)
from kiln.runs.train_step import apply_failures, preload, train_segments
from kiln.runs.unchanged import RunIdentity, code_digest, production_identical
from kiln.settings import Settings
from kiln.sources.checks import check_columns, validate_data
from kiln.stores import Stores
from kiln.stores.metadata.records import RunStatus, RunTrigger
from kiln.stores.snapshots import load_snapshot, snapshot

__all__ = ["RunResult", "Runner", "StoppedRun"]


class Runner:
    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        reporter: Reporter | None = None,
        *,
        release: Releaser | None = None,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.reporter = reporter or NullReporter()
        self.release = release
        """The run's last step: gate and deploy the registered version (None: skipped)."""
        self.interrupted = threading.Event()
        """Set by whoever turns SIGTERM/SIGINT into a KeyboardInterrupt: a library may swallow
        that exception into its own error, the run is still interrupted, not failed."""

    # -- entry points -------------------------------------------------------------------------
    def run(
        self,
        loaded: LoadedConfig,
        *,
        trigger: RunTrigger = "manual",
        options: RunOptions | None = None,
        force: bool = False,
    ) -> RunResult:
        """The whole loop; ``options``: an experiment, or only some segments retrained;
        ``force``: train and register even when nothing changed since production."""
        options = options or RunOptions()
        if options.stop_after is not None:
            raise ValueError("Runner.run does the whole loop; use Runner.run_steps")
        if force:
            options = replace(options, force=True)  # recorded with the options: resume keeps it
        result = self._run(loaded, trigger, options, data_digest=None)
        if not isinstance(result, RunResult):
            raise TypeError(f"a whole run ended as {result!r}")
        return result

    def run_steps(
        self, loaded: LoadedConfig, stop_after: StopStep, *, from_run: str | None = None
    ) -> StoppedRun:
        """The steps up to ``stop_after`` alone; check and train reuse the data snapshot of
        ``from_run`` (default: the pipeline's latest run that has one)."""
        digest = None
        if stop_after != "extract":
            from_run, digest = snapshot_to_reuse(self.stores, loaded.config.name, from_run)
        options = RunOptions(stop_after=stop_after, from_run=from_run)
        result = self._run(loaded, "manual", options, data_digest=digest)
        if not isinstance(result, StoppedRun):
            raise TypeError(f"a run stopped after {stop_after} ended as {result!r}")
        return result

    def _run(
        self,
        loaded: LoadedConfig,
        trigger: RunTrigger,
        options: RunOptions,
        *,
        data_digest: str | None,
    ) -> RunResult | StoppedRun:
        base = None
        if options.segments:  # refused before any run is recorded when it cannot be packed
            base = BasePackage.of_production(self.stores, loaded)
            base.plan(options.segments, where="kiln run")
            base.schema(loaded)
        executor = self._executor(loaded)
        try:
            executor.warm_up()  # workers import the model libraries while this process checks
            check_importable(loaded)
            run_id = self._start(loaded, trigger, options.alert_id)
        except BaseException:
            executor.close(cancel=True)
            raise
        return self._execute(
            loaded, run_id, data_digest=data_digest, executor=executor, options=options, base=base,
        )  # fmt: skip

    def _start(self, loaded: LoadedConfig, trigger: RunTrigger, alert_id: int | None) -> str:
        cfg = loaded.config
        host, pid = host_and_pid()
        with self.stores.metadata.unit_of_work() as uow:
            check_owner(uow, cfg.name, cfg.owner, str(loaded.path))
            uow.pipelines.upsert(cfg.name, cfg.owner, cfg.description, str(loaded.path.resolve()))
            run = uow.runs.create(
                pipeline=cfg.name,
                trigger=trigger,
                config_text=loaded.text,
                config_digest=cfg.digest,
                config_path=str(loaded.path.resolve()),
                host=host,
                pid=pid,
                code_revision=code_revision(loaded.base_dir),
                alert_id=alert_id,
            )
            previous = uow.locks.acquire(cfg.name, run.id, host, pid, LOCK_STALE_AFTER)
            if previous and previous != run.id:
                uow.runs.mark_finished(previous, "interrupted", error="its process died")
        return run.id

    def resume(self, run_id: str) -> RunResult:
        host, pid = host_and_pid()
        with self.stores.metadata.unit_of_work() as uow:
            run = uow.runs.get(run_id)
            steps = {s.name: s for s in uow.steps.for_run(run_id)}
            release = steps.get("release")
            released = release is not None and release.status in ("succeeded", "skipped")
            if run.status == "succeeded" and (released or run.model_version is None):
                raise ConfigError(
                    f"run {run_id} already succeeded"
                    + (f" (model version {run.model_version})" if run.model_version else ""),
                    hint="start a new run with `kiln run kiln.yaml`",
                )
            uow.locks.acquire(run.pipeline, run_id, host, pid, LOCK_STALE_AFTER)
            uow.runs.update(
                run_id, status="running", attempt=run.attempt + 1, host=host, pid=pid,
                error=None, finished_at=None,
            )  # fmt: skip
            extract = steps.get("extract")
        finished = release_only(self.stores, self.reporter, run, self.release, self.interrupted)
        if finished is not None:  # it was killed between registering and releasing
            return finished
        options = RunOptions.from_details(
            (extract.details or {}).get("options") if extract else None
        )
        loaded = parse_config(run.config_text, Path(run.config_path))
        executor = self._executor(loaded)
        executor.warm_up()
        result = self._execute(
            loaded, run_id, data_digest=run.data_digest, executor=executor, options=options
        )
        if not isinstance(result, RunResult):
            raise KilnError(
                f"run {run_id} was asked to stop after {options.stop_after}; it did",
                hint="start a whole run with `kiln run kiln.yaml`",
            )
        return result

    # -- the lifecycle ------------------------------------------------------------------------
    def _execute(
        self,
        loaded: LoadedConfig,
        run_id: str,
        *,
        data_digest: str | None,
        executor: Executor,
        options: RunOptions,
        base: BasePackage | None = None,
    ) -> RunResult | StoppedRun:
        cfg = loaded.config
        stop = options.stop_after
        heartbeat = Heartbeat(self.stores, cfg.name, run_id)
        background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-run")
        interrupted = False
        try:
            heartbeat.start()
            if options.segments and base is None:
                base = BasePackage.of_production(self.stores, loaded)
            df, pending_digest = self._step_extract(
                loaded, run_id, data_digest, background, options
            )
            if stop == "extract":
                data_digest = self._record_snapshot(run_id, pending_digest, rows=len(df))
                return self._stopped(run_id, options, data_digest)
            prep = self._step_check(loaded, run_id, df)
            if base is not None:  # production's other models read production's encoding
                schema = base.schema(loaded)
                base.check_classes(loaded, prep.classes)
                prep = replace(prep, schema=schema, X=schema.encode(prep.frame))
            data_digest = self._record_snapshot(run_id, pending_digest, rows=len(df))
            if stop == "check":
                return self._stopped(run_id, options, data_digest)
            identity = RunIdentity(
                data_digest, cfg.digest, code_revision(loaded.base_dir), code_digest(loaded)
            )
            same_as = None  # a --step run registers nothing: never skipped as unchanged
            if stop is None and not (options.force or options.experiment or options.segments):
                same_as = production_identical(self.stores, cfg.name, identity)
            if same_as is not None and cfg.deploy.on_unchanged == "skip":
                return self._skip_unchanged(cfg.name, run_id, same_as)
            profile = background.submit(training_profiles, prep, cfg)  # while segments train
            infos, plan, reused = self._step_train(
                loaded, run_id, prep, executor, options=options, base=base
            )
            if stop == "train":
                return self._stopped(run_id, options, data_digest)
            trained = TrainedRun(
                loaded, run_id, prep, plan, infos, data_digest, profile,
                code_digest=identity.code_digest, unchanged_from=same_as,
            )  # fmt: skip
            manifest, digest = self._step_package(
                trained, identity.code_revision, options.lineage(base)
            )
            warnings = fallback_warnings(manifest)
            for text in warnings:
                self.reporter.warn(text)
            version = register_step(
                self.stores, self.reporter, cfg.name, run_id, digest=digest, manifest=manifest
            )
            lineage = manifest["lineage"]
            result = RunResult(
                run_id, cfg.name, version, digest, manifest, reused_tasks=reused,
                warnings=warnings, experiment=lineage.get("experiment"),
                partial=lineage.get("partial"), unchanged_from=same_as,
            )  # fmt: skip
            return release_step(self.stores, self.reporter, result, self.release)
        except BaseException as e:  # KeyboardInterrupt, SIGTERM, or a bug: never leave it running
            # An interruption can surface as the error it caused while being handled (e.g. the
            # executor losing its workers): the run was still interrupted, not failed.
            interrupted = self.interrupted.is_set() or interruption(e)
            status: RunStatus = "interrupted" if interrupted else "failed"
            text = str(e) if isinstance(e, KilnError) else f"{type(e).__name__}: {e}"
            finish_run(self.stores, cfg.name, run_id, status, text)
            raise
        finally:
            heartbeat.stop()
            executor.close(cancel=interrupted)
            background.shutdown(wait=True, cancel_futures=True)

    def _executor(self, loaded: LoadedConfig) -> Executor:
        res = loaded.config.resources
        cpus = res.cpus or os.cpu_count() or 1
        workers = min(cpus, self.settings.max_workers or cpus)
        return make_executor(
            self.settings.executor,
            workers=workers,
            threads_per_task=max(1, cpus // workers),
            memory_per_task=res.memory,
            ray_address=self.settings.ray_address,
            preload=preload(loaded),
        )

    def _step_extract(
        self,
        loaded: LoadedConfig,
        run_id: str,
        digest: str | None,
        background: ThreadPoolExecutor,
        options: RunOptions,
    ) -> tuple[pd.DataFrame, Future[str]]:
        """Read the rows; their Parquet snapshot is written on ``background`` during the checks."""
        cfg = loaded.config
        with step(self.stores, self.reporter, run_id, "extract") as m:
            if options.to_details():  # read back by resume
                m.details["options"] = options.to_details()
            pending: Future[str] = Future()
            if digest is not None:  # resuming: the same rows as the first attempt
                table = load_snapshot(self.stores.content, digest, label=f"run {run_id}")
                m.details["reused_snapshot"] = True
                pending.set_result(digest)
            else:
                source = open_configured_source(loaded)
                table = source.read(cfg.data.query)
                if table.num_rows == 0:
                    raise SourceError(
                        f"{loaded.where('data', 'query')}: data.query returned no rows "
                        f"from {source.describe()}",
                        hint="check the WHERE clause of data.query",
                    )
                pending = background.submit(snapshot, self.stores.content, table)
            m.details["rows"] = table.num_rows
            df = table.to_pandas()
        return df, pending

    def _record_snapshot(self, run_id: str, pending: Future[str], *, rows: int) -> str:
        """The data lineage of the run; from here on a resume reuses exactly these rows."""
        digest = pending.result()
        with self.stores.metadata.unit_of_work() as uow:
            uow.runs.update(run_id, data_digest=digest, rows={"extracted": rows})
        return digest

    def _step_check(self, loaded: LoadedConfig, run_id: str, df: pd.DataFrame) -> Prepared:
        cfg = loaded.config
        with step(self.stores, self.reporter, run_id, "check") as m:
            where = where_field(loaded)
            check_columns(
                df,
                target=cfg.target.column,
                features=cfg.features,
                segment_column=cfg.segments.column if cfg.segments else None,
                time_column=cfg.data.time_column,
                where=where,
                split_key=cfg.evaluation.split.key,
            )
            m.details["checks"] = validate_data(
                df, cfg.checks, time_column=cfg.data.time_column, where=where
            )
            prep = prepare(df, loaded)
            m.details["rows"] = prep.rows()
            m.details["split"] = prep.split.to_dict()
            if prep.split.defaulted:
                self.reporter.warn(
                    f"no data.time_column: the holdout is {prep.split.describe()} "
                    "(set evaluation.split to choose: kind time, random or hash)"
                )
            if prep.dropped_null_target:
                self.reporter.warn(
                    f"{prep.dropped_null_target} rows without a target value were left out"
                )
            text = [f.name for f in prep.schema.features if f.kind == "categorical"]
            if numbers := numeric_text_warnings(loaded, prep.frame, text):
                m.details["numbers_as_text"] = numbers
                for warning in numbers:
                    self.reporter.warn(warning)
        return prep

    def _step_train(
        self,
        loaded: LoadedConfig,
        run_id: str,
        prep: Prepared,
        executor: Executor,
        *,
        options: RunOptions,
        base: BasePackage | None,
    ) -> tuple[dict[str, TaskInfo], SegmentPlan, int]:
        cfg = loaded.config
        with step(self.stores, self.reporter, run_id, "train") as m:
            trained = train_segments(
                loaded, run_id, prep, executor, stores=self.stores, reporter=self.reporter,
                only=options.segments if base is not None else None,
            )  # fmt: skip
            plan, failed, reused = trained.plan, trained.failed, trained.reused
            m.details |= {"tasks": len(trained.infos) + len(failed), "reused": reused,
                          "failed": sorted(failed), "workers": executor.workers,
                          "threads_per_task": executor.threads_per_task}  # fmt: skip
            if base is None:
                policy = cfg.segments.on_segment_failure if cfg.segments else "fail"
                return trained.infos, apply_failures(policy, plan, failed), reused
            apply_failures("fail", plan, failed)  # a partial run exists for these segments
            plan = base.plan(options.segments, where="kiln run")
            keep = [k for k in plan.trained if k not in options.segments]
            infos = trained.infos | base.infos(prep, cfg, keep)
            m.details |= {"retrained": list(options.segments), "base_version": base.version}
        return infos, plan, reused

    def _stopped(self, run_id: str, options: RunOptions, data_digest: str) -> StoppedRun:
        stop = options.stop_after or "register"
        note = {"reason": f"kiln run --step {stop}: stopped after {stop}"}
        pipeline = record_skipped(self.stores, run_id, stop, note)
        for name in STEPS[STEPS.index(stop) + 1 :]:
            self.reporter.step(name, "skipped", f"stopped after {stop} (--step {stop})")
        return StoppedRun(run_id, pipeline, stop, data_digest, reused_from=options.from_run)

    def _skip_unchanged(self, pipeline: str, run_id: str, same_as: int) -> RunResult:
        """``deploy.on_unchanged: skip``: no training, nothing registered, the run succeeded."""
        note = {"skipped": "unchanged", "unchanged_from": same_as}
        record_skipped(self.stores, run_id, "check", note)
        self.reporter.step("train", "skipped", f"identical to production v{same_as}")
        return RunResult(run_id, pipeline, None, None, {}, unchanged_from=same_as)

    def _step_package(
        self, run: TrainedRun, code_revision: str | None, lineage: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        with step(self.stores, self.reporter, run.run_id, "package") as m:
            manifest = build_manifest(run, code_revision)
            manifest["lineage"] |= lineage  # experiment name, partial: what was retrained
            if partial := lineage.get("partial"):  # the models taken as they were
                base = partial["base_version"]
                for seg, ref in manifest["models"].items():
                    if seg not in partial["retrained"]:
                        ref["from_version"] = base
                manifest["fallback"]["from_version"] = base
            digest = save_manifest(self.stores.content, manifest)
            m.details |= {"manifest": digest, "models": len(manifest["models"])}
        return manifest, digest
