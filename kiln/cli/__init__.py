"""The `kiln` command: parse, call, print. Exit codes are listed in the README.

The commands live in one module per topic; this module is the table of contents. It registers
them here, in the order `kiln --help` lists them, and `main()` turns errors into exit codes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from kiln.cli import (
    _alerts,
    _compare,
    _cost,
    _gc,
    _init,
    _labels,
    _monitor,
    _people,
    _pipelines,
    _release,
    _report,
    _scheduler,
    _serving,
    _stages,
    _ui,
)
from kiln.cli._common import _state, err
from kiln.errors import KilnError

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
runs_app = typer.Typer(no_args_is_help=True, help="Runs of pipelines.")
models_app = typer.Typer(no_args_is_help=True, help="Registered model versions.")
db_app = typer.Typer(no_args_is_help=True, help="The metadata database.")
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
capture_app = typer.Typer(no_args_is_help=True, help="Captured requests and responses.")
gates_app = typer.Typer(no_args_is_help=True, help="The gates of model versions.")
labels_app = typer.Typer(no_args_is_help=True, help="Actual outcomes of served requests.")
app.add_typer(db_app, name="db")
app.add_typer(capture_app, name="capture")
app.add_typer(gates_app, name="gates")
app.add_typer(_monitor.monitor_app, name="monitor")
app.add_typer(labels_app, name="labels")
alerts_app = typer.Typer(no_args_is_help=True, help="Alert episodes of the monitor.")
app.add_typer(alerts_app, name="alerts")
app.add_typer(_people.users_app, name="users")
app.add_typer(_people.tokens_app, name="tokens")


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


app.command()(_init.init)
app.command()(_pipelines.validate)
app.command()(_pipelines.schema)
app.command()(_pipelines.run)
app.command()(_pipelines.predict)
app.command()(_compare.compare)
app.command()(_stages.promote)
app.command()(_stages.rollback)
app.command()(_stages.shadow)
app.command()(_stages.override)
app.command()(_release.watch)
app.command()(_release.status)
app.command()(_stages.audit)
app.command()(_people.transfer)
app.command()(_serving.serve)
app.command()(_scheduler.scheduler)
app.command()(_gc.gc)
app.command()(_cost.cost)
app.command()(_ui.ui)
_monitor.monitor_app.command("report")(_report.report)

runs_app.command("list")(_pipelines.runs_list)
runs_app.command("show")(_pipelines.runs_show)
models_app.command("list")(_pipelines.models_list)
models_app.command("show")(_pipelines.models_show)
gates_app.command("show")(_release.gates_show)
gates_app.command("check")(_release.gates_check)
capture_app.command("query")(_serving.capture_query)
labels_app.command("add")(_labels.labels_add)
db_app.command("upgrade")(_serving.db_upgrade)
alerts_app.command("list")(_alerts.alerts_list)
alerts_app.command("ack")(_alerts.alerts_ack)


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
        usage, abort = _click_errors()
        if isinstance(e, usage):
            e.show()  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        if isinstance(e, abort):
            sys.exit(130)
        if _state["debug"]:
            raise
        err.print(
            f"internal error: {type(e).__name__}: {e}\n  rerun with --debug for the traceback"
        )
        sys.exit(1)


def _click_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """Click's usage errors and aborts: those of click, and of the copy Typer ships with."""
    import click

    usage: list[type[BaseException]] = [click.exceptions.ClickException]
    abort: list[type[BaseException]] = [click.exceptions.Abort]
    try:
        from typer import exceptions as typer_errors
        from typer._click import exceptions as bundled
    except ImportError:  # a Typer that uses click itself
        pass
    else:
        usage += [getattr(bundled, "ClickException", click.exceptions.ClickException)]
        abort += [getattr(typer_errors, "Abort", click.exceptions.Abort)]
    return tuple(usage), tuple(abort)
