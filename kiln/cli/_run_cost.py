"""What `kiln run` prints at its end about cost: the run's training cost per segment, and the
right-sizing advice on its ``resources``."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from kiln.cli._common import _stores, err, out
from kiln.errors import KilnError
from kiln.monitoring.cost.model import amount_text
from kiln.pipeline.plan import segment_label
from kiln.settings import Settings

__all__ = ["money", "show_run_cost"]


def show_run_cost(ctx: typer.Context, settings: Settings, run_id: str) -> None:
    """Print the run's cost table and the advice; a cost that cannot be computed (a
    malformed price table) is a warning: the run itself succeeded."""
    from kiln.config.prices import resolve_prices
    from kiln.monitoring.cost.rightsize import rightsizing
    from kiln.monitoring.cost.training import run_cost

    try:
        prices = resolve_prices(settings)
        stores = _stores(ctx)
        try:
            cost = run_cost(stores.metadata, prices, run_id)
            advice = rightsizing(stores.metadata, cost.pipeline, run_id=run_id)
        finally:
            stores.close()
    except KilnError as e:
        err.print(Text(f"! training cost of run {run_id}: {e}", style="yellow"), soft_wrap=True)
        return
    discount = prices.training_spot_discount
    title = f"training cost of run {run_id} ({prices.currency}" + (
        f", spot discount {discount:.0%})" if discount else ")"
    )
    out.print(_table(cost, title))
    for reason in cost.unknown:
        out.print(Text(f"unknown: {reason}", style="yellow"), soft_wrap=True)
    for note in cost.notes:
        out.print(Text(f"note: {note}"), soft_wrap=True)
    for a in advice:
        out.print(Text(f"right-sizing: {a.text}"), soft_wrap=True)


def _table(cost: Any, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("segment", "task", "shared", "retry", "total"):
        table.add_column(name, justify="left" if name == "segment" else "right")
    for segment, total in sorted(cost.by_segment.items(), key=lambda kv: -(kv[1] or 0.0)):
        parts = {i.detail: i.usd for i in cost.items if i.segment == segment}
        retry = money(parts["retry"]) if "retry" in parts else ""
        name = segment_label(segment)
        table.add_row(name, money(parts.get("task")), money(parts.get("shared")), retry,
                      money(total))  # fmt: skip
    if not cost.by_segment:
        table.add_row("(no task)", "", money(cost.shared_usd), "", money(cost.total_usd))
    table.add_section()
    retries = [i.usd for i in cost.items if i.detail == "retry"]
    tasks = [i.usd for i in cost.items if i.detail == "task"]
    total = money(cost.total_usd)
    if cost.total_usd is None:  # a killed step: what is known is a lower bound
        total = "≥ " + amount_text(sum(i.usd for i in cost.items if i.usd is not None))
    table.add_row("run", money(_sum(tasks)), money(cost.shared_usd),
                  money(_sum(retries)) if retries else "", total)  # fmt: skip
    return table


def money(value: float | None) -> str:
    """An amount with the digits that matter (a run costs fractions of a cent)."""
    return "unknown" if value is None else amount_text(value)


def _sum(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)
