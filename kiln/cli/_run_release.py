"""The release step of `kiln run`: gate the version the run registered and act on the outcome
(or compare an experiment with production), then print what was decided."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.text import Text

from kiln.cli._common import _stores, out
from kiln.cli._run_cost import show_run_cost
from kiln.console import gate_table
from kiln.errors import EXIT_BLOCKED
from kiln.settings import Settings

__all__ = ["Releaser", "show_released"]


class Releaser:
    """The release step of `kiln run` (recorded by the runner; `--resume` redoes it when the
    run died before it): gate the new version and act on the outcome, or, for an experiment,
    compare it with production; the outcome is printed once the run returned."""

    def __init__(self, ctx: typer.Context, settings: Settings) -> None:
        self.ctx, self.settings = ctx, settings
        self.decision: Any = None
        self.challenged: Any = None

    def __call__(self, result: Any) -> dict[str, Any]:
        from kiln.release.controller import Release

        if result.unchanged_from is not None and not result.experiment:
            return {"outcome": "unchanged", "unchanged_from": result.unchanged_from}
        stores = _stores(self.ctx)
        try:
            release = Release(self.settings, stores)
            if result.experiment:
                self.challenged = release.challenge(result.pipeline, result.version)
                return {"outcome": "compared", "champion_challenger": self.challenged.status}
            self.decision = decision = release.after_run(result.pipeline, result.version)
        finally:
            stores.close()
        gates = {r.gate: r.status for r in decision.results}
        return {"outcome": decision.outcome, "message": decision.message[:500], "gates": gates}


def _show_challenge(result: Any, pipeline: str, version: int) -> None:
    """An experiment: the champion/challenger table against production, and no decision."""
    from kiln.cli._compare import champion_table

    if result.status == "skipped" or not result.evidence.get("segments"):
        out.print(f"{result.gate}: {result.status}: {escape(result.summary)}")
    else:
        champion = result.evidence.get("champion_version")
        out.print(
            champion_table(result.evidence, f"experiment v{version} vs production v{champion}")
        )
        out.print(Text(f"{result.status}: {result.summary}"), highlight=False)
    out.print(
        f"experiment: not deployed. `kiln compare {pipeline} production {version}` shows both"
        " side by side; re-run without --experiment to release the idea"
    )


def _show_release(decision: Any) -> str:
    """The gates of the new version and the outcome (blocked is an outcome, not an error: the
    command exits ``EXIT_BLOCKED``, not with an error message); returns the outcome."""
    pipeline, version = decision.pipeline, decision.version
    out.print(gate_table(decision.results, f"gates of {pipeline} v{version}"))
    color = {"blocked": "red", "promoted": "green", "canary": "cyan", "shadow": "cyan"}
    style = color.get(decision.outcome, "yellow")
    out.print(Text.assemble((f"{decision.outcome}: ", f"bold {style}"), decision.message))
    if decision.outcome == "blocked":
        out.print(
            f"  `kiln gates show {pipeline} {version}` has the evidence;"
            f" `kiln override {pipeline} {version} --reason TEXT` (admin) promotes it anyway"
            f" (exit code {EXIT_BLOCKED})"
        )
    return decision.outcome


def show_released(result: Any, releaser: Releaser, *, gated: bool = True) -> None:
    """What the release step decided; with ``--skip-gates`` (``gated`` False) an experiment is
    still compared with production (it is never deployed) and an unchanged run still says so."""
    same = result.unchanged_from
    if not gated and result.experiment and releaser.challenged is None:
        releaser(result)
    if releaser.challenged is not None:
        _show_challenge(releaser.challenged, result.pipeline, result.version)
    elif same is not None:
        out.print(
            f"[yellow]unchanged[/]: data, config and code are identical to production v{same}: "
            f"v{result.version} stays a candidate, not gated nor promoted "
            "(deploy.on_unchanged: register)"
        )
    elif releaser.decision is not None and _show_release(releaser.decision) == "blocked":
        show_run_cost(releaser.ctx, releaser.settings, result.run_id)
        raise typer.Exit(EXIT_BLOCKED)
    show_run_cost(releaser.ctx, releaser.settings, result.run_id)
