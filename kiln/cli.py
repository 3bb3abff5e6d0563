"""The `kiln` command: parse, call, print. Exit codes are listed in the README."""

from __future__ import annotations

import json
import signal
import sys
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kiln.config import json_schema, load_config
from kiln.console import RichReporter, gate_table, segment_table, status_table
from kiln.errors import KilnError, NotFoundError
from kiln.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
runs_app = typer.Typer(no_args_is_help=True, help="Runs of pipelines.")
models_app = typer.Typer(no_args_is_help=True, help="Registered model versions.")
db_app = typer.Typer(no_args_is_help=True, help="The metadata database.")
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
capture_app = typer.Typer(no_args_is_help=True, help="Captured requests and responses.")
gates_app = typer.Typer(no_args_is_help=True, help="The gates of model versions.")
app.add_typer(db_app, name="db")
app.add_typer(capture_app, name="capture")
app.add_typer(gates_app, name="gates")

# Piped output (CI logs, files) gets a wide page instead of Rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_state: dict[str, Any] = {"debug": False}


@app.callback()
def _global(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(help="Folder of the embedded stores.")] = None,
    db: Annotated[str | None, typer.Option(help="Metadata database URL (KILN_DB_URL).")] = None,
    artifacts: Annotated[
        str | None, typer.Option(help="Artifact store URL (KILN_ARTIFACTS_URL).")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Kiln: one kiln.yaml -> per-segment models -> a registered, versioned package."""
    _state["debug"] = debug
    overrides = {"home": home, "db_url": db, "artifacts_url": artifacts}
    ctx.obj = {k: v for k, v in overrides.items() if v is not None}


def _settings(ctx: typer.Context, **more: Any) -> Settings:
    return Settings(**ctx.obj, **{k: v for k, v in more.items() if v is not None})


def _stores(ctx: typer.Context, *, upgrade: bool = False, **more: Any) -> Any:
    from kiln.runs.context import open_stores

    return open_stores(_settings(ctx, **more), upgrade=upgrade)


@app.command()
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


@app.command()
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


@app.command()
def schema() -> None:
    """Print the JSON Schema of kiln.yaml (for editor completion)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command()
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
    signal.signal(signal.SIGTERM, _sigterm)
    runner = Runner(settings, stores, RichReporter(err))
    try:
        how: RunTrigger = "schedule" if trigger == "schedule" else "manual"
        result = runner.resume(resume) if resume else runner.run(loaded, trigger=how)  # type: ignore[arg-type]
    finally:
        stores.close()
    out.print(segment_table(result.manifest, f"{result.pipeline} v{result.version}"))
    out.print(
        f"[green]registered[/] {result.pipeline} [bold]v{result.version}[/] "
        f"(run {result.run_id}, package sha256:{result.manifest_digest[:12]}"
        + (f", {result.reused_tasks} tasks reused" if result.reused_tasks else "")
        + ")"
    )
    if not skip_gates:
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


def _sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


@runs_app.command("list")
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


@runs_app.command("show")
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


@models_app.command("list")
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


@models_app.command("show")
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


@app.command()
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


_Reason = Annotated[str | None, typer.Option(help="Why; kept in the audit log.")]
_Token = Annotated[
    str | None,
    typer.Option(envvar="KILN_TOKEN", show_default=False, help="The admin token (KILN_TOKEN)."),
]


def _stage_service(ctx: typer.Context, token: str | None) -> tuple[Any, Any]:
    """Check the admin token (before touching any store), then open the stage service."""
    from kiln.registry.auth import check_admin
    from kiln.registry.stages import Stages

    check_admin(_settings(ctx).admin_token, token)
    stores = _stores(ctx)
    return Stages(stores.metadata), stores


def _actor() -> str:
    import getpass
    import os

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the password database
        return f"uid {os.getuid()}"


def _changed(change: Any) -> None:
    from rich.markup import escape

    mark = "[green]✓[/]" if change.changed else "[yellow]=[/]"
    out.print(f"{mark} {escape(str(change))}", highlight=False)


@app.command()
def promote(
    ctx: typer.Context, pipeline: str, version: int, reason: _Reason = None, token: _Token = None
) -> None:
    """Make VERSION the production version of PIPELINE (admin); the previous one is archived."""
    stages, stores = _stage_service(ctx, token)
    try:
        _changed(stages.promote(pipeline, version, actor=_actor(), reason=reason))
    finally:
        stores.close()


@app.command()
def rollback(
    ctx: typer.Context, pipeline: str, reason: _Reason = None, token: _Token = None
) -> None:
    """Put back the version that served PIPELINE before the current one (admin)."""
    stages, stores = _stage_service(ctx, token)
    try:
        _changed(stages.rollback(pipeline, actor=_actor(), reason=reason))
    finally:
        stores.close()


@app.command()
def shadow(
    ctx: typer.Context,
    pipeline: str,
    version: int,
    off: Annotated[bool, typer.Option("--off", help="Stop shadowing VERSION.")] = False,
    reason: _Reason = None,
    token: _Token = None,
) -> None:
    """Serve VERSION in shadow beside production (admin); --off stops it."""
    stages, stores = _stage_service(ctx, token)
    try:
        change = stages.unshadow if off else stages.set_shadow
        _changed(change(pipeline, version, actor=_actor(), reason=reason))
    finally:
        stores.close()


@app.command()
def override(
    ctx: typer.Context,
    pipeline: str,
    version: int,
    reason: Annotated[
        str | None, typer.Option(help="Why this blocked version may serve (required, audited).")
    ] = None,
    token: _Token = None,
) -> None:
    """Promote a BLOCKED version despite its gates (admin; the reason is audited)."""
    from kiln.registry.stages import StageError

    if not (reason or "").strip():
        raise StageError(
            f"overriding the gates of {pipeline} v{version} needs a reason",
            hint='pass --reason "why this version may serve despite its gates"',
        )
    stages, stores = _stage_service(ctx, token)
    try:
        _changed(stages.override(pipeline, version, actor=_actor(), reason=reason or ""))
    finally:
        stores.close()


@gates_app.command("show")
def gates_show(
    ctx: typer.Context,
    pipeline: str,
    version: int,
    as_json: Annotated[bool, typer.Option("--json", help="The full evidence as JSON.")] = False,
) -> None:
    """The gate results of VERSION with their evidence."""
    stores = _stores(ctx)
    try:
        with stores.metadata.unit_of_work() as uow:
            record = uow.versions.get(pipeline, version)
            results = uow.gates.for_version(pipeline, version)
    finally:
        stores.close()
    if as_json:
        doc = {
            "pipeline": pipeline, "version": version, "stage": record.stage,
            "gates": [
                {"gate": g.gate, "status": g.status, "summary": g.summary,
                 "evaluated_at": g.evaluated_at.isoformat(), "evidence": g.evidence}
                for g in results
            ],
        }  # fmt: skip
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    if not results:
        out.print(f"{pipeline} v{version} ({record.stage}) has no gate results yet")
        return
    out.print(gate_table(results, f"gates of {pipeline} v{version} ({record.stage})"))
    for g in results:
        _evidence(g.gate, g.status, g.evidence)


def _evidence(gate: str, status: str, evidence: dict[str, Any]) -> None:
    """The parts of a failed gate's evidence a reader needs first: what failed, where."""
    if status != "failed":
        return
    keys = ("regressed_segments", "missing", "failed", "failing", "examples", "requests_without")
    for key in keys:
        value = evidence.get(key)
        if value:
            text = json.dumps(value, default=str)
            out.print(Text(f"  {gate}.{key}: {text[:600]}"), highlight=False)


@gates_app.command("check")
def gates_check(ctx: typer.Context, pipeline: str, version: int) -> None:
    """Run VERSION's pre-traffic gates again and store the results; no stage changes."""
    from kiln.gates.release import Release

    settings = _settings(ctx)
    stores = _stores(ctx)
    try:
        results = Release(settings, stores).evaluate(pipeline, version)
    finally:
        stores.close()
    out.print(gate_table(results, f"gates of {pipeline} v{version}"))


@app.command()
def watch(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline.")] = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    every: Annotated[float, typer.Option(min=0.1, help="Seconds between passes.")] = 30.0,
) -> None:
    """Move live versions on: judge shadows whose period is over, promote or block canaries,
    roll back a new production version whose error rate or p99 passes its threshold."""
    import time

    from kiln.gates.release import Release

    settings = _settings(ctx)
    stores = _stores(ctx)
    signal.signal(signal.SIGTERM, _sigterm)
    release = Release(settings, stores)
    try:
        while True:
            events = release.tick(pipeline) if pipeline else release.tick_all()
            for event in events:
                out.print(Text(event), highlight=False)
            if once:
                if not events:
                    out.print("nothing to do")
                return
            time.sleep(every)
    finally:
        stores.close()


@app.command()
def status(ctx: typer.Context) -> None:
    """Every pipeline: production version and its age, last run, gates, canary, shadows,
    blocked versions."""
    from kiln.registry.status import pipeline_status

    stores = _stores(ctx)
    try:
        rows = pipeline_status(stores.metadata)
    finally:
        stores.close()
    if not rows:
        out.print("no pipelines yet: `kiln run kiln.yaml` registers the first version")
        return
    out.print(status_table(rows))


@app.command()
def audit(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many events.")] = 50,
) -> None:
    """The audit log, newest first: who changed what, when, and why."""
    stores = _stores(ctx)
    try:
        with stores.metadata.unit_of_work() as uow:
            events = uow.audit.list(pipeline=pipeline, limit=limit)
    finally:
        stores.close()
    t = Table("at", "actor", "action", "pipeline", "version", "reason", "details")
    for e in events:
        details = " ".join(f"{k}={v}" for k, v in (e.details or {}).items() if v is not None)
        t.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}", Text(e.actor), e.action, Text(e.pipeline),
            f"v{e.version}" if e.version is not None else "-", Text(e.reason or ""),
            Text(details[:80]),
        )  # fmt: skip
    out.print(t)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    reload_seconds: Annotated[
        float | None, typer.Option(help="How often to re-read the registry.")
    ] = None,
) -> None:
    """Serve predictions of every pipeline's production version (shadow, capture, metrics)."""
    from kiln.serving import serve as run_server

    settings = _settings(ctx, reload_seconds=reload_seconds)
    _stores(ctx).close()  # fail here, with a clear message, if the registry is unreachable
    out.print(f"serving on http://{host}:{port} ({workers} worker(s)); OpenAPI at /docs")
    run_server(settings, host=host, port=port, workers=workers)


@capture_app.command("query")
def capture_query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="SQL over the view `captures`.")],
    limit: Annotated[int, typer.Option(help="Rows to print at most.")] = 50,
) -> None:
    """Query captured traffic with DuckDB, e.g. `SELECT pipeline, count(*) FROM captures
    GROUP BY 1`."""
    from kiln.stores.capture import query_captures

    table = query_captures(_settings(ctx).artifact_root, sql)
    t = Table(*table.column_names)
    for row in table.slice(0, limit).to_pylist():
        t.add_row(*(_cell(v) for v in row.values()))
    out.print(t)
    if table.num_rows > limit:
        out.print(f"... {table.num_rows - limit} more rows (--limit)")


def _cell(v: Any) -> str:
    return _num(v) if isinstance(v, float) else str(v)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the metadata database to the current schema."""
    settings = _settings(ctx)
    stores = _stores(ctx, upgrade=True)
    stores.close()
    out.print(f"[green]✓[/] metadata database at {_masked(settings.metadata_url)} is current")


def _masked(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _status(s: str) -> str:
    color = {"succeeded": "green", "failed": "red", "running": "cyan", "interrupted": "yellow"}
    return f"[{color.get(s, 'white')}]{s}[/]"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / 2**20:.0f}"


@app.command()
def scheduler(
    ctx: typer.Context,
    folder: Annotated[
        Path, typer.Option("--dir", help="Folder of the pipelines' kiln.yaml files (recursive).")
    ],
    once: Annotated[
        bool, typer.Option("--once", help="Run what is due now to completion, then exit.")
    ] = False,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between scans.")] = 10.0,
    max_runs: Annotated[int, typer.Option(min=1, help="Runs at the same time, at most.")] = 1,
    retries: Annotated[int, typer.Option(min=0, help="Retries of a failed run.")] = 2,
    retry_delay: Annotated[
        float, typer.Option(min=0, help="Seconds before the first retry (doubled each time).")
    ] = 60.0,
) -> None:
    """Run every kiln.yaml under --dir on its cron (its schedule: section), until stopped.
    A new or changed kiln.yaml is picked up without a restart; many schedulers may share one
    database (each firing runs once)."""
    import logging

    from kiln.scheduler import Scheduler

    settings = _settings(ctx)
    stores = _stores(ctx, upgrade=True)
    try:
        try:  # wired to the release controller
            from kiln.gates.release import Release

            after_tick: Any = Release(settings, stores).tick
        except ImportError:
            after_tick = None
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
        logger = logging.getLogger("kiln.scheduler")
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
        runner = Scheduler(
            settings, folder, poll_seconds=poll, max_runs=max_runs, retries=retries,
            retry_delay=retry_delay, after_tick=after_tick, stores=stores,
        )  # fmt: skip
        if not once:
            runner.run_forever()
            return
        summary = runner.run_once()
    finally:
        stores.close()
    _scheduler_summary(summary)


def _scheduler_summary(summary: Any) -> None:
    out.print(
        f"{len(summary.scheduled)} scheduled, {len(summary.unscheduled)} unscheduled,"
        f" {len(summary.problems)} refused pipeline file(s)"
    )
    if summary.outcomes:
        t = Table("pipeline", "due (UTC)", "attempt", "status", "run", "error")
        for o in summary.outcomes:
            lines = (o.error or "").splitlines()
            said = [line for line in lines if line.startswith("error: ")]
            t.add_row(
                o.pipeline, o.due_at.strftime("%Y-%m-%d %H:%M"), str(o.attempt),
                _status(o.status), o.run_id or "-", (said or lines or [""])[0],
            )  # fmt: skip
        out.print(t)
    failed = [o for o in summary.outcomes if o.status == "failed"]
    if failed:
        raise KilnError(
            f"{len(failed)} firing(s) failed: {', '.join(o.pipeline for o in failed)}",
            hint="the log above shows each attempt's error; `kiln runs list` shows the runs",
        )


def main() -> None:
    try:
        code = app(standalone_mode=False)
        if code == 130:  # Typer turns KeyboardInterrupt (and our SIGTERM) into this code
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except KilnError as e:
        if _state["debug"]:
            raise
        err.print(Text("error: ", style="bold red") + Text(str(e)), highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; `kiln runs list` shows the run, `kiln run --resume RUN` resumes it")
        sys.exit(130)
    except Exception as e:
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        if _state["debug"]:
            raise
        err.print(
            f"internal error: {type(e).__name__}: {e}\n  rerun with --debug for the traceback"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
