"""`kiln scheduler`: run every kiln.yaml of a folder on its cron, and summarise a single pass."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from kiln.cli._common import _settings, _status, _stores, out
from kiln.errors import EXIT_BLOCKED, KilnError

if TYPE_CHECKING:
    from kiln.scheduler import PipelinePass


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
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve the monitoring gauges (Prometheus) here."),
    ] = None,
) -> None:
    """Run every kiln.yaml under --dir on its cron (its schedule: section), until stopped.
    A new or changed kiln.yaml is picked up without a restart; many schedulers may share one
    database (each firing runs once)."""
    from kiln.scheduler import Scheduler

    settings = _settings(ctx)
    stores = _stores(ctx, upgrade=True)
    try:
        after_tick = _after_tick(settings, stores, folder, metrics_port)
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


def _after_tick(
    settings: Any, stores: Any, folder: Path, metrics_port: int | None
) -> Callable[[str], list[Any]]:
    """What every pass does for each pipeline (scheduled or not) after claiming firings: the
    release tick, then the monitor pass (with the pipeline's kiln.yaml from --dir) and the due
    notifications, then the gauges. A failing monitor is logged; the release loop goes on."""
    from kiln.monitoring.hook import MonitorHook, refresh_gauges, serve_gauges
    from kiln.release.controller import Release
    from kiln.scheduler import Folder

    release = Release(settings, stores)
    configs = Folder(folder)

    def config_of(name: str) -> Any:
        scan = configs.scan()
        found = scan.scheduled.get(name) or scan.unscheduled.get(name)
        return None if found is None else found.loaded.config

    hook = MonitorHook(settings, stores, configs=config_of)
    if metrics_port is not None:
        serve_gauges(metrics_port)

    def after_tick(name: str) -> list[Any]:
        try:
            events: list[Any] = list(release.tick(name))
        except KilnError as e:  # logged; the monitor of the pipeline still runs
            logging.getLogger("kiln.scheduler").error("release tick of %r failed: %s", name, e)
            events = []
        events += hook(name)
        if metrics_port is not None:
            refresh_gauges(stores)
        return events

    return after_tick


def _pipeline_passes(passes: list[PipelinePass]) -> None:
    """Per pipeline: when it is due next, what ran, what catch-up skipped, what waits."""
    if not passes:
        return
    t = Table("pipeline", "next due", "next due (UTC)", "ran", "skipped (due, UTC)", "retrying",
              title="pipelines", title_justify="left")  # fmt: skip
    notes = []
    for p in passes:
        ran = ", ".join(f"{_utc(o.due_at)} {o.status}" for o in p.ran) or "none"
        retrying = ", ".join(f"{_utc(o.due_at)} attempt {o.attempt + 1}" for o in p.retrying)
        t.add_row(
            p.pipeline, f"{p.next_local:%Y-%m-%d %H:%M} {p.timezone}", _utc(p.next_due), ran,
            ", ".join(_utc(d) for d in p.skipped) or "none", retrying or "none",
        )  # fmt: skip
        if p.not_run is not None:
            notes.append(
                f"{p.pipeline}: not run: the firing due {_utc(p.not_run)} UTC passed before"
                " this scheduler first saw the pipeline, and `catchup: skip` (the default) waits"
                f" for the next cron time ({_utc(p.next_due)} UTC); `schedule: {{catchup: once}}`"
                " runs the latest missed firing at once"
            )
    out.print(t)
    for note in notes:
        out.print(Text(note), highlight=False)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


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
    _pipeline_passes(summary.pipelines)
    failed = [o for o in summary.outcomes if o.status == "failed"]
    if failed:
        raise KilnError(
            f"{len(failed)} firing(s) failed: {', '.join(o.pipeline for o in failed)}",
            hint="the log above shows each attempt's error; `kiln runs list` shows the runs",
        )
    blocked = [o for o in summary.outcomes if o.status == "blocked"]
    if blocked:
        out.print(
            f"{len(blocked)} version(s) registered but blocked by their gates:"
            f" {', '.join(o.pipeline for o in blocked)} (`kiln gates show` has the evidence;"
            f" exit code {EXIT_BLOCKED})"
        )
        raise typer.Exit(EXIT_BLOCKED)
