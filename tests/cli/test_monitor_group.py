"""`kiln monitor PIPELINE` beside `kiln monitor SUBCOMMAND`: the first word that is neither an
option (nor an option's value) nor a subcommand is the pipeline."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.testing import CliRunner

from kiln.cli._monitor import _PipelineFirst


def _app(seen: list[tuple[str, str | None, str | None]]) -> typer.Typer:
    app = typer.Typer(cls=_PipelineFirst, invoke_without_command=True)

    @app.callback(invoke_without_command=True)
    def run(
        ctx: typer.Context,
        pipeline: Annotated[str | None, typer.Option("--pipeline")] = None,
        since: Annotated[str | None, typer.Option("--since")] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        if ctx.invoked_subcommand is None:
            seen.append(("pass", pipeline, since))

    @app.command("report")
    def report(pipeline: str, html: Annotated[str, typer.Option("--html")]) -> None:
        seen.append(("report", pipeline, html))

    return app


def test_the_first_free_word_is_the_pipeline_unless_it_is_a_subcommand() -> None:
    seen: list[tuple[str, str | None, str | None]] = []
    app = _app(seen)
    runner = CliRunner()
    for args in (
        ["flights"], ["flights", "--since", "2013-07-01"], ["--since", "2013-07-01", "flights"],
        ["--json", "flights"], ["--since=2013-07-01", "flights", "--json"], [],
        ["report", "flights", "--html", "out.html"],
    ):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    assert seen == [
        ("pass", "flights", None), ("pass", "flights", "2013-07-01"),
        ("pass", "flights", "2013-07-01"), ("pass", "flights", None),
        ("pass", "flights", "2013-07-01"), ("pass", None, None),
        ("report", "flights", "out.html"),
    ]  # fmt: skip
