"""`kiln monitor report PIPELINE --html FILE`: the monitoring history as one offline HTML page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kiln.cli._common import _stores, out

__all__ = ["parse_since", "report"]


def parse_since(text: str | None) -> datetime | None:
    """``2013-07-01`` or an ISO date and time; a time without a zone is UTC."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date: give a date or a date and time in UTC, e.g. 2013-07-01"
            " or 2013-07-01T06:00",
            param_hint="--since",
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def report(
    ctx: typer.Context,
    pipeline: Annotated[str, typer.Argument(help="The pipeline's name.")],
    html: Annotated[
        Path, typer.Option("--html", help="The HTML file to write (replaced if it exists).")
    ],
    since: Annotated[
        str | None,
        typer.Option(help="Only windows that start at or after this date (UTC), e.g. 2013-07-01."),
    ] = None,
) -> None:
    """Write PIPELINE's monitoring history as one HTML page that opens offline.

    From the stored windows and alerts: drift per feature over time, a feature x segment
    heatmap, the live metric against the training metric, traffic per segment, latency,
    errors, and the alert episodes."""
    from kiln.monitoring.history import load_history
    from kiln.monitoring.report import write_report

    start = parse_since(since)
    stores = _stores(ctx)
    try:
        history = load_history(stores.metadata, pipeline, since=start)
    finally:
        stores.close()
    path = write_report(history, html)
    windows = history.windows
    span = (
        f"{len(windows)} windows from {windows[0].start:%Y-%m-%d %H:%M} to"
        f" {windows[-1].end:%Y-%m-%d %H:%M} UTC"
        if windows
        else "no window stored yet (`kiln monitor` computes them)"
    )
    out.print(
        f"[green]✓[/] wrote {escape(str(path))}: {span}, {len(history.alerts)} alert episodes",
        highlight=False,
    )
