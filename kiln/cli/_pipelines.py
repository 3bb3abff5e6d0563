"""Pipelines end to end: scaffold and check a kiln.yaml, run it, look at its runs and the
model versions it registered, and score a file of rows with one of them."""

from __future__ import annotations

import json
import signal
import sys
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer
from rich.table import Table
from rich.text import Text

from kiln.cli._common import _mib, _num, _settings, _status, _stores, err, out
from kiln.config import json_schema, load_config
from kiln.console import RichReporter, gate_table, segment_table
from kiln.errors import KilnError, NotFoundError
from kiln.settings import Settings


def init(
    folder: Annotated[Path, typer.Argument(help="Where to write kiln.yaml and train.py.")] = Path(),
) -> None:
    """Scaffold a commented kiln.yaml and a train.py."""
    folder.mkdir(parents=True, exist_ok=True)
    templates = resources.files("kiln.config") / "templates"
    for name in ("kiln.yaml", "train.py"):
        target = folder / name
        if target.exists():
            raise KilnError(f"{target} exists already", hint="pick an empty folder")
        target.write_text((templates / name).read_text())
        out.print(f"wrote {target}")


def validate(file: Annotated[Path, typer.Argument(help="The kiln.yaml to check.")]) -> None:
    """Check a kiln.yaml: schema, types, cron, and that the model imports."""
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
        str, typer.Option(hidden=True, help="What started the run: manual or schedule.")
    ] = "manual",
) -> None:
    """Run a pipeline: extract, check, train every segment, package, register, then gate the
    new version and deploy it as its `deploy:` policy says (shadow, canary, promote, block)."""
    from kiln.runs.runner import Runner
    from kiln.stores.metadata.records import RunTrigger

    if (file is None) == (resume is None):
        raise KilnError("give a kiln.yaml to run, or --resume RUN_ID", hint="kiln run kiln.yaml")
    loaded = load_config(file) if file is not None else None
    settings = _settings(ctx, executor=executor, max_workers=workers, ray_address=ray_address)
    stores = _stores(ctx, upgrade=True, executor=executor, max_workers=workers)
    runner = Runner(settings, stores, RichReporter(err))

    def stop(signum: int, frame: FrameType | None) -> NoReturn:
        runner.interrupted.set()  # DuckDB, for one, turns the KeyboardInterrupt into its error
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        how: RunTrigger = "schedule" if trigger == "schedule" else "manual"
        result = (
            runner.resume(resume) if resume else runner.run(loaded, trigger=how, force=force)  # type: ignore[arg-type]
        )
    except Exception:
        if runner.interrupted.is_set():  # the error an interruption caused: say interrupted
            raise KeyboardInterrupt from None
        raise
    finally:
        stores.close()
    same = result.unchanged_from
    if result.version is None or result.manifest_digest is None:
        out.print(
            f"[green]unchanged[/]: data, config and code are identical to production v{same}: "
            f"nothing registered (run {result.run_id}; `kiln run --force` trains anyway)"
        )
        return
    out.print(segment_table(result.manifest, f"{result.pipeline} v{result.version}"))
    out.print(
        f"[green]registered[/] {result.pipeline} [bold]v{result.version}[/] "
        f"(run {result.run_id}, package sha256:{result.manifest_digest[:12]}"
        + (f", {result.reused_tasks} tasks reused" if result.reused_tasks else "")
        + ")"
    )
    if same is not None:
        out.print(
            f"[yellow]unchanged[/]: data, config and code are identical to production v{same}: "
            f"v{result.version} stays a candidate, not gated nor promoted "
            "(deploy.on_unchanged: register)"
        )
    elif not skip_gates:
        _release(ctx, settings, result.pipeline, result.version)


def _release(ctx: typer.Context, settings: Settings, pipeline: str, version: int) -> None:
    """Gate the new version and act on the outcome (blocked is an outcome, not an error)."""
    from kiln.gates.release import Release

    stores = _stores(ctx)
    try:
        decision = Release(settings, stores).after_run(pipeline, version)
    finally:
        stores.close()
    out.print(gate_table(decision.results, f"gates of {pipeline} v{version}"))
    color = {"blocked": "red", "promoted": "green", "canary": "cyan", "shadow": "cyan"}
    style = color.get(decision.outcome, "yellow")
    out.print(Text.assemble((f"{decision.outcome}: ", f"bold {style}"), decision.message))
    if decision.outcome == "blocked":
        out.print(
            f"  `kiln gates show {pipeline} {version}` has the evidence;"
            f" `kiln override {pipeline} {version} --reason TEXT` (admin) promotes it anyway"
        )


def runs_list(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    limit: int = 20,
) -> None:
    """The latest runs, newest first."""
    stores = _stores(ctx)
    with stores.metadata.unit_of_work() as uow:
        items = uow.runs.list(pipeline=pipeline, limit=limit)
    t = Table("run", "pipeline", "status", "trigger", "started", "wall s", "version", "error")
    for r in items:
        wall = (r.finished_at - r.started_at).total_seconds() if r.finished_at else None
        t.add_row(
            r.id, r.pipeline, _status(r.status), r.trigger, f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            f"{wall:.1f}" if wall is not None else "-",
            f"v{r.model_version}" if r.model_version else "-",
            (r.error or "").splitlines()[0][:60] if r.error else "",
        )  # fmt: skip
    out.print(t)


def runs_show(ctx: typer.Context, run_id: str) -> None:
    """A run's steps and tasks with their timings, CPU seconds and peak memory."""
    stores = _stores(ctx)
    with stores.metadata.unit_of_work() as uow:
        r = uow.runs.get(run_id)
        steps = uow.steps.for_run(run_id)
        tasks = uow.tasks.for_run(run_id)
    out.print(
        f"run [bold]{r.id}[/] of {r.pipeline}: {_status(r.status)} (attempt {r.attempt}, "
        f"{r.trigger}), data sha256:{(r.data_digest or '-')[:12]}, code {r.code_revision or '-'}"
    )
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


def models_list(ctx: typer.Context, pipeline: Annotated[str | None, typer.Option()] = None) -> None:
    """Registered versions with their stage and headline metric."""
    stores = _stores(ctx)
    with stores.metadata.unit_of_work() as uow:
        versions = uow.versions.list(pipeline=pipeline)
    t = Table("pipeline", "version", "stage", "created", "segments", "primary metric", "run")
    for v in versions:
        m = v.metrics or {}
        primary = m.get("primary", "")
        t.add_row(
            v.pipeline, f"v{v.version}", v.stage, f"{v.created_at:%Y-%m-%d %H:%M}",
            str(m.get("segments", "-")), f"{primary}={_num((m.get('overall') or {}).get(primary))}",
            v.run_id,
        )  # fmt: skip
    out.print(t)


def models_show(
    ctx: typer.Context,
    pipeline: str,
    version: int,
    verify: Annotated[bool, typer.Option(help="Load every artifact and check it.")] = False,
) -> None:
    """Per-segment metrics and the lineage of one version."""
    from kiln.registry.package import load_package

    stores = _stores(ctx)
    with stores.metadata.unit_of_work() as uow:
        v = uow.versions.get(pipeline, version)
    label = f"{pipeline} v{version}"
    if verify:
        manifest = load_package(stores.content, v.manifest_digest, label=label).manifest
    else:
        manifest = json.loads(
            stores.content.get(v.manifest_digest, what=f"the manifest of {label}")
        )
    out.print(segment_table(manifest, f"{label} ({v.stage})"))
    out.print_json(data={"lineage": manifest["lineage"], "environment": manifest["environment"]})
    if verify:
        out.print(f"[green]✓[/] every artifact of {label} matches its SHA-256")


def predict(
    ctx: typer.Context,
    pipeline: str,
    input: Annotated[Path, typer.Option("--input", help="Rows: .csv, .parquet or .json.")],
    version: Annotated[int | None, typer.Option(help="Default: the newest version.")] = None,
    output: Annotated[Path | None, typer.Option(help="Write .csv or .parquet here.")] = None,
) -> None:
    """Predict a file of rows with a registered version (batch scoring)."""
    from kiln.registry.predictor import Predictor
    from kiln.runs.batch import read_rows

    stores = _stores(ctx)
    with stores.metadata.unit_of_work() as uow:
        if version is None:
            listed = uow.versions.list(pipeline=pipeline)
            if not listed:
                raise NotFoundError(
                    f"pipeline {pipeline!r} has no model version",
                    hint="`kiln run kiln.yaml` registers one; `kiln models list` shows them",
                )
            version = max(x.version for x in listed)
        v = uow.versions.get(pipeline, version)
    df = read_rows(input)
    predictor = Predictor.load(stores.content, v.manifest_digest, label=f"{pipeline} v{v.version}")
    p = predictor.predict(df)
    df = df.assign(prediction=p.values, model=p.model, fallback=p.fallback)
    if output is None:
        out.print(df[["prediction", "model", "fallback"]].head(20).to_string())
        out.print(f"{len(df)} rows, {int(p.fallback.sum())} answered by the fallback")
    elif output.suffix == ".parquet":
        df.to_parquet(output)
    else:
        df.to_csv(output, index=False)
