"""`kiln monitor [PIPELINE]`: one monitor pass, printed one table per window, most severe first.

`monitor` is a command group (`kiln monitor report ...` is a subcommand) whose own call runs the
pass: a first word that is not a subcommand is the pipeline (:class:`_PipelineFirst`).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from kiln.cli._common import _settings, _stores, out
from kiln.errors import ConfigError, KilnError

if TYPE_CHECKING:
    from typer._click.core import Context as ClickContext  # the click that Typer bundles

    from kiln.config.models import PipelineConfig
    from kiln.monitoring.findings import WindowResult

__all__ = ["monitor_app"]

_LEVEL = {"alert": "bold red", "warn": "yellow", "ok": "green", "unjudged": "dim"}
_STATE = {"alert": "bold red", "warn": "yellow", "ok": "green", "no_traffic": "dim"}
SHOWN = 12
"""Findings shown per window (the most severe; --json has all)."""


class _PipelineFirst(TyperGroup):
    """``kiln monitor flights --json`` runs the pass for ``flights``; ``kiln monitor report``
    the subcommand: the first word that is no option and no subcommand becomes
    ``--pipeline``."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        takes_value = {
            opt for p in self.params
            if p.param_type_name == "option" and not getattr(p, "is_flag", False)
            for opt in p.opts
        }  # fmt: skip
        i = 0
        while i < len(args):
            word = args[i]
            if word == "--":
                break
            if word.startswith("-"):
                i += 1 if "=" in word or word not in takes_value else 2
                continue
            if word not in self.commands:
                args = [*args[:i], "--pipeline", word, *args[i + 1 :]]
            break
        return super().parse_args(ctx, args)


monitor_app = typer.Typer(
    cls=_PipelineFirst,
    invoke_without_command=True,
    help="Drift, live performance, latency and errors of production traffic, per window."
    " `kiln monitor [PIPELINE] [OPTIONS]` computes every closed window not stored yet, stores"
    " it, updates the alerts and prints it, most severe first (exit code 0: alerts are not"
    " errors); the subcommands below read what is stored.",
)


@monitor_app.callback(invoke_without_command=True, options_metavar="[PIPELINE] [OPTIONS]")
def monitor(
    ctx: typer.Context,
    pipeline: Annotated[
        str | None,
        typer.Option("--pipeline", help="Only this pipeline (or give it as the first word)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="The pipeline's kiln.yaml (monitor: settings).")
    ] = None,
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Folder of kiln.yaml files (found by name).")
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="Window length, e.g. 1h or 1d (default: monitor.window).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="First window to compute: a date (UTC), e.g. 2013-07-01.")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Only windows that end by then (UTC; default now), e.g. to replay."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The window results as JSON.")] = False,
) -> None:
    """Compute every closed window not stored yet (drift per feature and segment, live metric
    against training, latency and errors), store it, update the alerts, and print it.
    Alerts are not errors: the exit code is 0."""
    if ctx.invoked_subcommand is not None:
        return
    from kiln.monitoring.hook import latest_config, production_config
    from kiln.monitoring.monitor import Monitor

    length = _window(window)
    start = _since(since, "--since")
    now = _since(until, "--until") or datetime.now(UTC)
    settings = _settings(ctx)
    stores = _stores(ctx)
    docs: list[dict[str, Any]] = []
    try:
        given = _given_configs(config, folder, pipeline)
        with stores.metadata.read() as uow:
            names = [pipeline] if pipeline else sorted(p.name for p in uow.pipelines.list())
        if pipeline is None and config is not None:
            names = list(given)
        if not names:
            out.print("no pipelines yet: `kiln run kiln.yaml` registers the first version")
            return
        monitor = Monitor(settings, stores)
        for name in names:
            served = production_config(stores, name)
            if served is None:
                _say(as_json, f"{name}: nothing in production, nothing to monitor"
                     f" (`kiln promote {name} VERSION` puts a version in production)")  # fmt: skip
                latest = latest_config(stores, name)  # training costs money all the same
                cfg = given.get(name) or (latest.config if latest is not None else None)
                if cfg is not None:
                    _budget(settings, stores, name, cfg, as_json)
                continue
            cfg = given.get(name) or served.config
            results = monitor.run(name, cfg, now=now, since=start, window=length)
            shown, stored = results, False
            if not results:
                shown, stored = _latest_stored(stores, name, length or cfg.monitor.window), True
            docs += [r.to_dict() | {"stored_before": stored} for r in shown]
            if not as_json:
                _print_pass(name, cfg, monitor, shown, stored)
            _budget(settings, stores, name, cfg, as_json)
    finally:
        stores.close()
    if as_json:
        sys.stdout.write(json.dumps(docs, indent=2, default=str) + "\n")


def _budget(settings: Any, stores: Any, name: str, cfg: PipelineConfig, as_json: bool) -> None:
    """The pipeline's budget check (cost.budget_per_month), its alert changes said."""
    from kiln.monitoring.hook import budget_lines

    for line in budget_lines(settings, stores, {name: cfg}, datetime.now(UTC)):
        _say(as_json, f"{name}: {line}")


def _say(as_json: bool, text: str) -> None:
    (sys.stderr.write(text + "\n") if as_json else out.print(Text(text), highlight=False))


def _window(text: str | None) -> timedelta | None:
    if text is None:
        return None
    from pydantic import ValidationError

    from kiln.config.monitor import MonitorConfig

    try:
        return MonitorConfig.model_validate({"window": text}).window
    except ValidationError as e:
        reason = e.errors()[0]["msg"].removeprefix("Value error, ")
        raise typer.BadParameter(reason, param_hint="--window") from e


def _since(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise typer.BadParameter(
            f"{text!r} is no date; use e.g. 2013-07-01 or 2013-07-01T06:00", param_hint=option
        ) from e
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _given_configs(
    config: Path | None, folder: Path | None, pipeline: str | None
) -> dict[str, PipelineConfig]:
    """The kiln.yaml files given on the command line, by pipeline name."""
    from kiln.config import load_config

    if config is not None and folder is not None:
        raise KilnError("give --config or --dir, not both", hint="--dir finds it by name")
    if config is not None:
        cfg = load_config(config).config
        if pipeline is not None and cfg.name != pipeline:
            raise ConfigError(
                f"{config} is the config of pipeline {cfg.name!r}, not {pipeline!r}",
                hint=f"`kiln monitor {cfg.name} --config {config}`, or pass the right file",
            )
        return {cfg.name: cfg}
    if folder is None:
        return {}
    from kiln.scheduler import Folder

    scan = Folder(folder).scan()
    found = {name: p.loaded.config for name, p in (scan.scheduled | scan.unscheduled).items()}
    if pipeline is not None and pipeline not in found:
        problems = "; ".join(f"{p}: {e}" for p, e in scan.problems.items())
        raise ConfigError(
            f"no kiln.yaml of pipeline {pipeline!r} under {folder}"
            + (f" (refused: {problems})" if problems else ""),
            hint="pass --config FILE, or leave both out to use the production version's config",
        )
    return found


def _latest_stored(stores: Any, pipeline: str, length: timedelta) -> list[WindowResult]:
    from kiln.monitoring.findings import WindowResult

    with stores.metadata.read() as uow:
        latest = uow.windows.latest(pipeline, int(length.total_seconds()))
    return [] if latest is None else [WindowResult.from_dict(latest.summary)]


def _print_pass(
    name: str, cfg: PipelineConfig, monitor: Any, results: list[WindowResult], stored: bool
) -> None:
    from kiln.monitoring.hook import change_line

    done = monitor.last
    for note in done.notes:
        out.print(Text(f"{name}: {note}"), highlight=False)
    if stored:
        out.print(
            f"{name}: no new closed window; the latest stored one:"
            if results else f"{name}: no closed window to show yet"
        )  # fmt: skip
    for result in results:
        out.print(window_table(result))
        for line in _lines(result):
            out.print(Text(f"  {line}"), highlight=False)
    for change in done.alert_changes:
        out.print(Text(change_line(change)), highlight=False)


def window_table(result: WindowResult) -> Table:
    """The window's findings, most severe first: level, check, value against threshold."""
    state = result.state
    worst = result.worst
    title = (
        f"{result.pipeline} {result.start:%Y-%m-%d %H:%M} .. {result.end:%Y-%m-%d %H:%M} UTC:"
        f" [{_STATE.get(state, 'white')}]{state}[/] ({result.rows} requests"
        + (f", versions {', '.join(f'v{v}' for v in result.versions)}" if result.versions else "")
        + ")"
        + (f"; worst {escape(worst.check)}" if worst is not None else "")
    )
    t = Table("level", "check", "value", "threshold", "what", title=title, title_justify="left")
    findings = [f for f in result.findings if f.level != "ok"] or result.findings
    for f in findings[:SHOWN]:
        t.add_row(
            f"[{_LEVEL.get(f.level, 'white')}]{f.level}[/]", escape(f.check), _num(f.value),
            _num(f.threshold), escape(f.message),
        )  # fmt: skip
    hidden = len(result.findings) - min(len(findings), SHOWN)
    if hidden > 0:
        t.caption = f"{hidden} more finding(s), all ok or less severe: --json has them"
    return t


def _lines(result: WindowResult) -> list[str]:
    """Traffic shares, latency and the live metric, one line each, then the window's notes."""
    from kiln.monitoring.findings import ALL

    lines = []
    shares = [s for s in result.traffic if s.segment != ALL]
    if shares:
        lines.append(
            "traffic: " + ", ".join(
                f"{s.segment} {s.share:.0%} (training {s.share_reference:.0%})"
                for s in sorted(shares, key=lambda s: -s.share)[:8]
            )
        )  # fmt: skip
    for r in result.latency:
        if r.segment == ALL:
            lines.append(
                f"v{r.version}: {r.requests} requests, errors {r.error_rate:.2%}, latency"
                f" p50 {_num(r.p50_ms)} p95 {_num(r.p95_ms)} p99 {_num(r.p99_ms)} ms"
            )
    for p in result.performance:
        if p.segment == ALL:
            change = "" if p.change is None else f" ({p.change:+.1%})"
            lines.append(
                f"v{p.version}: live {p.metric} {_num(p.value)} against {_num(p.reference)} in"
                f" training{change} on {p.labelled} labelled of {p.requests} requests"
            )
    if result.labels is not None and (result.labels.unknown or result.labels.duplicates):
        lines.append(
            f"labels: {result.labels.unknown} for unknown requests,"
            f" {result.labels.duplicates} sent again"
        )
    return lines + result.notes


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"
