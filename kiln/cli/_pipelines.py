"""Pipelines end to end: scaffold and check a kiln.yaml, run it, look at its runs and the
model versions it registered, and score a file of rows with one of them."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kiln.cli._common import _mib, _num, _settings, _status, _stores, err, out
from kiln.cli._run_release import Releaser, show_released
from kiln.config import json_schema, load_config
from kiln.console import RichReporter, segment_table
from kiln.errors import ConfigError, KilnError
from kiln.runs.options import StopStep
from kiln.stores.metadata.records import RunTrigger


def validate(
    file: Annotated[Path, typer.Argument(help="The kiln.yaml to check.")],
    no_data: Annotated[
        bool,
        typer.Option(
            "--no-data", help="Check the file only; do not open data.source (offline, in CI)."
        ),
    ] = False,
) -> None:
    """Check a kiln.yaml: schema, types, cron, that the model imports and takes its params;
    then (unless --no-data) that data.source opens, data.query runs, the named columns exist,
    and warn about segment values never seen and numbers stored as text (first 10,000 rows)."""
    from kiln.runs.preflight import check_importable

    loaded = load_config(file)
    check_importable(loaded)
    cfg = loaded.config
    seg = cfg.segments
    out.print(
        f"[green]✓[/] {file}: pipeline [bold]{cfg.name}[/], target {cfg.target.column} "
        f"({cfg.target.task}), {len(cfg.features)} features, "
        + (f"one model per {seg.column}" if seg else "one global model")
    )
    if no_data:
        return
    from kiln.runs.probe import probe_data

    probe = probe_data(loaded)
    for warning in probe.warnings:
        err.print(Text("! " + warning, style="yellow"), soft_wrap=True)
    segments = (
        f", {probe.segment_values} distinct {escape(seg.column)} values"
        if seg and probe.segment_values is not None
        else ""
    )
    out.print(
        f"[green]✓[/] data: {escape(probe.described)}: the named columns are in the first "
        f"{probe.sampled_rows:,} rows{segments}"
        + (f"; {len(probe.warnings)} warning(s)" if probe.warnings else ""),
        soft_wrap=True,
    )


def schema() -> None:
    """Print the JSON Schema of kiln.yaml (for editor completion)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


def run(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="The kiln.yaml to run.")] = None,
    resume: Annotated[str | None, typer.Option(help="Resume this run id.")] = None,
    executor: Annotated[str | None, typer.Option(help="local (default) or ray.")] = None,
    workers: Annotated[int | None, typer.Option(help="Cap on parallel tasks.")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    skip_gates: Annotated[
        bool, typer.Option("--skip-gates", help="Register only; do not gate or deploy.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Train and register even when data, config and code are identical to "
            "production (deploy.on_unchanged: skip would register nothing).",
        ),
    ] = False,
    trigger: Annotated[
        str,
        typer.Option(
            help="What started the run: manual, schedule, or drift / performance (with --alert)."
        ),
    ] = "manual",
    alert: Annotated[
        int | None,
        typer.Option(help="The alert that started a drift or performance run (`kiln alerts`)."),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(
            help="Register an experiment version: compared with production, never deployed."
        ),
    ] = None,
    segment: Annotated[
        list[str] | None,
        typer.Option(
            help="Retrain only this segment (repeatable); the other models are production's."
        ),
    ] = None,
    step: Annotated[
        StopStep | None,
        typer.Option(help="Run the steps up to this one alone (debugging); nothing registered."),
    ] = None,
    from_run: Annotated[
        str | None, typer.Option(help="With --step check|train: reuse this run's data snapshot.")
    ] = None,
) -> None:
    """Run a pipeline: extract, check, train every segment, package, register, then gate the
    new version and deploy it as its `deploy:` policy says (shadow, canary, promote, block).

    --experiment NAME registers a version that is only compared with production; --segment S
    retrains S and packs it with production's other models; --step extract|check|train stops
    after that step (check and train reuse the latest data snapshot). --resume RUN continues a
    run that was killed or failed where it stopped; the release (gates, then deploy or block) is
    the run's last recorded step, so a run killed after registering resumes with it alone.

    Exits 0 when the version was registered (and not blocked), 10 when the version was
    registered but its gates blocked it (`kiln gates show` has the evidence), and with the
    error's code (README: Exit codes) when the run failed."""
    from kiln.runs.options import RunOptions, check_experiment_name
    from kiln.runs.runner import Runner

    if (file is None) == (resume is None):
        raise KilnError("give a kiln.yaml to run, or --resume RUN_ID", hint="kiln run kiln.yaml")
    _check_run_flags(resume, experiment, segment, step, from_run)
    how = _trigger(trigger, alert)
    options = RunOptions(
        experiment=check_experiment_name(experiment) if experiment else None,
        segments=tuple(dict.fromkeys(segment or ())),
        alert_id=alert,
    )
    loaded = load_config(file) if file is not None else None
    settings = _settings(ctx, executor=executor, max_workers=workers, ray_address=ray_address)
    stores = _stores(ctx, upgrade=True, executor=executor, max_workers=workers)
    releaser = Releaser(ctx, settings)
    runner = Runner(settings, stores, RichReporter(err), release=None if skip_gates else releaser)

    def stop(signum: int, frame: FrameType | None) -> NoReturn:
        runner.interrupted.set()  # DuckDB, for one, turns the KeyboardInterrupt into its error
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if step is not None:
            stopped = runner.run_steps(loaded, step, from_run=from_run)  # type: ignore[arg-type]
        elif resume:
            result = runner.resume(resume)
        else:
            result = runner.run(loaded, trigger=how, options=options, force=force)  # type: ignore[arg-type]
    except Exception:
        if runner.interrupted.is_set():  # the error an interruption caused: say interrupted
            raise KeyboardInterrupt from None
        raise
    finally:
        stores.close()
    if step is not None:
        reused = (
            f", reusing the data snapshot of run {stopped.reused_from}"
            if stopped.reused_from
            else ""
        )
        out.print(
            f"[green]stopped after {step}[/] (run {stopped.run_id}{reused}; data"
            f" sha256:{stopped.data_digest[:12]}); nothing packaged or registered"
        )
        runs_show(ctx, stopped.run_id)
        return
    same = result.unchanged_from
    if result.version is None or result.manifest_digest is None:
        out.print(
            f"[green]unchanged[/]: data, config and code are identical to production v{same}: "
            f"nothing registered (run {result.run_id}; `kiln run --force` trains anyway)"
        )
        return
    out.print(segment_table(result.manifest, f"{result.pipeline} v{result.version}"))
    what = f"experiment {escape(result.experiment)!s} " if result.experiment else ""
    partial = result.partial
    out.print(
        f"[green]registered[/] {what}{result.pipeline} [bold]v{result.version}[/] "
        f"(run {result.run_id}, package sha256:{result.manifest_digest[:12]}"
        + (f", {result.reused_tasks} tasks reused" if result.reused_tasks else "")
        + (f", retrained {', '.join(partial['retrained'])}, the other models from"
           f" v{partial['base_version']}" if partial else "")
        + ")"
    )  # fmt: skip
    show_released(result, releaser, gated=not skip_gates)


def _trigger(trigger: str, alert: int | None) -> RunTrigger:
    """The run's trigger; drift and performance name the alert that started them."""
    triggers: dict[str, RunTrigger] = {
        "manual": "manual", "schedule": "schedule", "drift": "drift", "performance": "performance",
    }  # fmt: skip
    how = triggers.get(trigger)
    if how is None:
        raise typer.BadParameter(
            f"{trigger!r} is not one of {', '.join(triggers)}", param_hint="--trigger"
        )
    if (how in ("drift", "performance")) != (alert is not None):
        raise typer.BadParameter(
            "--trigger drift|performance and --alert ID go together", param_hint="--alert"
        )
    return how


def _check_run_flags(
    resume: str | None,
    experiment: str | None,
    segment: list[str] | None,
    step: str | None,
    from_run: str | None,
) -> None:
    if resume and (experiment or segment or step or from_run):
        raise ConfigError(
            "--resume continues a run as it was started; it takes no other run option",
            hint=f"kiln run --resume {resume}",
        )
    if step and (experiment or segment):
        raise ConfigError(
            "--step runs steps alone and registers nothing: it goes without --experiment and"
            " --segment",
            hint="kiln run kiln.yaml --step train",
        )
    if from_run and step not in ("check", "train"):
        raise ConfigError(
            "--from-run names the data snapshot that --step check|train reuses",
            hint=f"kiln run kiln.yaml --step train --from-run {from_run}",
        )


def runs_list(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    limit: int = 20,
) -> None:
    """The latest runs, newest first."""
    from kiln.registry.liveness import dead_reason

    stores = _stores(ctx)
    with stores.metadata.read() as uow:
        items = uow.runs.list(pipeline=pipeline, limit=limit)
        locks = {name: uow.locks.get(name) for name in {r.pipeline for r in items}}
    t = Table("run", "pipeline", "status", "trigger", "started", "wall s", "version", "error")
    for r in items:
        wall = (r.finished_at - r.started_at).total_seconds() if r.finished_at else None
        dead = dead_reason(r, locks[r.pipeline])  # a `running` run whose process is gone
        error = f"{dead}: `kiln run --resume {r.id}`" if dead else r.error
        t.add_row(
            r.id, r.pipeline, _status("interrupted" if dead else r.status), r.trigger,
            f"{r.started_at:%Y-%m-%d %H:%M:%S}", f"{wall:.1f}" if wall is not None else "-",
            f"v{r.model_version}" if r.model_version else "-",
            (error or "").splitlines()[0][:90] if error else "",
        )  # fmt: skip
    out.print(t)


def runs_show(ctx: typer.Context, run_id: str) -> None:
    """A run's steps and tasks with their timings, CPU seconds and peak memory."""
    from kiln.registry.liveness import dead_reason

    stores = _stores(ctx)
    with stores.metadata.read() as uow:
        r = uow.runs.get(run_id)
        steps = uow.steps.for_run(run_id)
        tasks = uow.tasks.for_run(run_id)
        dead = dead_reason(r, uow.locks.get(r.pipeline))
    by = f" by alert #{r.alert_id}" if r.alert_id else ""
    out.print(
        f"run [bold]{r.id}[/] of {r.pipeline}: {_status('interrupted' if dead else r.status)}"
        f" (attempt {r.attempt}, {r.trigger}{by}), data sha256:{(r.data_digest or '-')[:12]},"
        f" code {r.code_revision or '-'}"
    )
    if dead:
        out.print(f"[yellow]recorded running, but {dead}: `kiln run --resume {r.id}`[/]")
    if r.error:
        out.print(f"[red]{r.error}[/]")
    t = Table("step", "status", "wall s", "cpu s", "peak MiB", "details", title="steps")
    for s in steps:
        t.add_row(
            s.name, _status(s.status), _num(s.wall_seconds), _num(s.cpu_seconds),
            _mib(s.peak_memory_bytes), json.dumps(s.details or {})[:80],
        )  # fmt: skip
    out.print(t)
    t = Table("segment", "status", "train", "holdout", "metrics", "wall s", "cpu s", "peak MiB",
              "error", title="tasks")  # fmt: skip
    for k in tasks:
        t.add_row(
            k.segment, _status(k.status), str(k.rows_train), str(k.rows_holdout),
            " ".join(f"{n}={_num(v)}" for n, v in (k.metrics or {}).items()),
            _num(k.wall_seconds), _num(k.cpu_seconds), _mib(k.peak_memory_bytes),
            (k.error or "").strip().splitlines()[-1][:60] if k.error else "",
        )  # fmt: skip
    out.print(t)


def models_list(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option()] = None,
    stage: Annotated[str | None, typer.Option(help="Only versions at this stage.")] = None,
    limit: Annotated[int, typer.Option(help="Versions per page (at most 200).")] = 50,
    page: Annotated[int, typer.Option(help="Page to show (1: the newest versions).")] = 1,
) -> None:
    """Registered versions with their stage and headline metric, newest first per pipeline."""
    from kiln.registry.queries.versions import versions_page

    stores = _stores(ctx)
    try:
        found = versions_page(stores.metadata, pipeline, stage, page=page, per_page=limit)
    finally:
        stores.close()
    t = Table("pipeline", "version", "stage", "created", "segments", "primary metric", "run")
    for v in found.rows:
        t.add_row(
            v.pipeline, f"v{v.version}",
            f"{v.stage} [magenta](experiment {escape(v.experiment)})[/]"
            if v.experiment else v.stage,
            f"{v.created_at:%Y-%m-%d %H:%M}",
            "-" if v.segments is None else str(v.segments),
            f"{v.primary or ''}={_num(v.primary_value)}",
            v.run_id,
        )  # fmt: skip
    out.print(t)
    if found.after:
        more = f" --page {page + 1}" + (f" --limit {limit}" if limit != 50 else "")
        more += "".join(f" --{k} {v}" for k, v in (("pipeline", pipeline), ("stage", stage)) if v)
        plural = "s" if found.after != 1 else ""
        out.print(f"{found.after} more version{plural}: `kiln models list{more}`", highlight=False)
    elif not found.rows and found.total:
        out.print(f"page {page} is past the end: {found.pages} page(s) of {limit}")


def models_show(
    ctx: typer.Context,
    pipeline: str,
    version: int,
    verify: Annotated[bool, typer.Option(help="Load every artifact and check it.")] = False,
) -> None:
    """Per-segment metrics and the lineage of one version."""
    from kiln.registry.package import load_package

    stores = _stores(ctx)
    with stores.metadata.read() as uow:
        v = uow.versions.get(pipeline, version)
    label = f"{pipeline} v{version}"
    if verify:
        manifest = load_package(stores.content, v.manifest_digest, label=label).manifest
    else:
        manifest = json.loads(
            stores.content.get(v.manifest_digest, what=f"the manifest of {label}")
        )
    out.print(segment_table(manifest, f"{label} ({v.stage})"))
    if manifest.get("classes"):
        out.print(f"classes of {manifest['target']}: {', '.join(manifest['classes'])}")
    out.print_json(data={"lineage": manifest["lineage"], "environment": manifest["environment"]})
    if verify:
        out.print(f"[green]✓[/] every artifact of {label} matches its SHA-256")


def predict(
    ctx: typer.Context,
    pipeline: str,
    input: Annotated[Path, typer.Option("--input", help="Rows: .csv, .parquet or .json.")],
    version: Annotated[
        int | None,
        typer.Option(help="Score with this version, whatever its stage. Default: production."),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write .csv or .parquet here.")] = None,
) -> None:
    """Predict a file of rows with a registered version (batch scoring).

    Every row is checked as the prediction server checks it; bad rows are listed (exit 3).
    The output adds the columns prediction, model, fallback, version and unseen.
    """
    import pandas as pd

    from kiln.registry.version import Version
    from kiln.runs.batch import choose_version, read_rows, score_rows

    stores = _stores(ctx)
    try:
        with stores.metadata.read() as uow:
            v = choose_version(uow.versions, pipeline, version)
        label = f"{pipeline} v{v.version}"
        predictor = Version(stores, v, package_label=label).predictor
    finally:
        stores.close()
    text = [f.name for f in predictor.schema.features if f.kind == "categorical"]
    if predictor.segment_column:
        text.append(predictor.segment_column)
    df = read_rows(input, text_columns=text)
    scored = score_rows(df, predictor, path=input, label=label)
    p = scored.prediction
    unseen = [()] * len(df) if p.unseen is None else p.unseen
    as_lists = output is not None and output.suffix == ".parquet"
    column = pd.Series([list(u) if as_lists else ";".join(u) for u in unseen], index=df.index)
    shown = ["prediction", "model", "fallback", "version", "unseen"]
    common: dict[str, Any] = {
        "model": p.model,
        "fallback": p.fallback,
        "version": v.version,
        "unseen": column,
    }
    if p.probabilities is not None and p.classes is not None:
        # a multiclass version: the most probable class, then each class's probability
        proba = {f"probability_{c}": p.probabilities[:, j] for j, c in enumerate(p.classes)}
        df = df.assign(prediction=p.labels(), **common, **proba)
        shown += list(proba)
    else:
        df = df.assign(prediction=p.values, **common)
    if output is None:
        out.print(df[shown].head(20).to_string())
    elif output.suffix == ".parquet":
        df.to_parquet(output)
    else:
        df.to_csv(output, index=False)
    out.print(
        f"scored {len(df)} rows with pipeline {pipeline} version {v.version} ({v.stage}):"
        f" {int(p.fallback.sum())} answered by the fallback"
        + (f"; written to {output}" if output is not None else "")
    )
    if scored.unseen:
        counts = ", ".join(f"{k} {n}" for k, n in sorted(scored.unseen.items()))
        how = {"accept": "answered as missing", "fallback": "answered by the fallback"}
        out.print(
            f"unseen categories (rows per feature): {counts}"
            f" ({how.get(predictor.unseen_policy, predictor.unseen_policy)})"
        )
