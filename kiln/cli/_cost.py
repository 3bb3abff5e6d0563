"""`kiln cost`: what each pipeline costs to train, serve and keep, and how to spend less."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kiln.cli._common import _settings, _stores, out
from kiln.pipeline.plan import segment_label

if TYPE_CHECKING:
    from kiln.monitoring.cost.report import CostReport, Sum

__all__ = ["cost", "cost_table", "parse_since"]

_BY = ("segment", "version", "run")


def parse_since(text: str, now: datetime) -> datetime:
    """``30d`` (a duration back from now) or a date (UTC), e.g. ``2026-11-01``."""
    from kiln.monitoring.cost.report import period_start

    try:
        return period_start(text, now)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--since") from None


def cost(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    by: Annotated[
        str | None, typer.Option(help="Rows per segment, version or run of each pipeline.")
    ] = None,
    since: Annotated[
        str, typer.Option(help="Start of the period: a duration back from now, or a date.")
    ] = "30d",
    no_measure: Annotated[
        bool,
        typer.Option("--no-measure", help="Report the stored storage measurements as they are."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Training, serving and storage cost per pipeline in the period, as $/month, against the
    previous period, with the most expensive segments and the right-sizing advice. Storage is
    measured first (unless --no-measure); prices come from the price table."""
    from kiln.config.prices import resolve_prices
    from kiln.monitoring.cost.report import cost_report

    if by is not None and by not in _BY:
        raise typer.BadParameter(f"{by!r}: use one of {', '.join(_BY)}", param_hint="--by")
    now = datetime.now(UTC)
    start = parse_since(since, now)
    settings = _settings(ctx)
    prices = resolve_prices(settings)
    stores = _stores(ctx)
    try:
        if pipeline is not None:
            _known(stores, pipeline)
        if not no_measure:
            from kiln.monitoring.cost.storage import measure_storage

            measure_storage(stores, settings, pipeline=pipeline)
        report = cost_report(
            stores.metadata, prices, since=start, until=now, pipeline=pipeline,
            by=by,  # type: ignore[arg-type]
        )  # fmt: skip
        advice = {p.pipeline: _advice(stores, p.pipeline) for p in report.pipelines}
    finally:
        stores.close()
    if as_json:
        doc = report.to_dict()
        for p in doc["pipelines"]:
            p["rightsizing"] = [_advice_doc(a) for a in advice.get(p["pipeline"], [])]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    if not report.pipelines:
        out.print(f"no cost recorded since {start:%Y-%m-%d %H:%M} UTC" + (
            f" for {pipeline}" if pipeline else ""
        ))  # fmt: skip
        return
    out.print(cost_table(report))
    for p in report.pipelines:
        if p.rows:
            out.print(_rows_table(report, p.pipeline))
        for a in advice.get(p.pipeline, []):
            out.print(Text(f"{p.pipeline}: {a.text}", style="yellow"), highlight=False)
    if any(not p.total.complete for p in report.pipelines):
        out.print(
            "≥: some amounts are unknown (a measurement is missing); the figure is what is known"
        )


def _known(stores: Any, pipeline: str) -> None:
    from kiln.errors import NotFoundError

    with stores.metadata.read() as uow:
        names = sorted(p.name for p in uow.pipelines.list())
    if pipeline not in names:
        raise NotFoundError(
            f"no pipeline {pipeline!r} (known: {', '.join(names) or 'none yet'})",
            hint="`kiln status` lists the pipelines; `kiln run kiln.yaml` registers one",
        )


def _advice(stores: Any, pipeline: str) -> list[Any]:
    """A's right-sizing advice (resource, requested, used, text) of the pipeline's latest run."""
    from kiln.monitoring.cost.rightsize import rightsizing

    return list(rightsizing(stores.metadata, pipeline))


def _advice_doc(advice: Any) -> dict[str, Any]:
    return {k: getattr(advice, k, None) for k in ("resource", "requested", "used", "text")}


def _trend(value: float | None) -> str:
    if value is None:
        return "-"
    color = "red" if value > 0.05 else "green" if value < -0.05 else "white"
    return f"[{color}]{value:+.0%}[/]"


def cost_table(report: CostReport) -> Table:
    """One row per pipeline: $/month per kind and in total, the period's total, the trend,
    $ per 1,000 predictions and the most expensive segments."""
    from kiln.monitoring.cost.report import Sum

    c = report.currency
    days = (report.until - report.since) / timedelta(days=1)
    t = Table(
        title=f"cost per month ({c}), from the {days:.3g} days since"
        f" {report.since:%Y-%m-%d %H:%M} UTC",
        title_justify="left",
    )
    for col in ("pipeline", "training", "serving", "storage", "total /month", "spent",
                "trend", "per 1k predictions", "top segments"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("pipeline", "top segments") else "right")
    for p in report.pipelines:
        m = p.monthly
        tops = ", ".join(f"{escape(segment_label(s))} {v.text(c)}" for s, v in p.top_segments)
        tops = tops or "-"
        per_k = "-" if p.usd_per_1000_predictions is None else (
            Sum(p.usd_per_1000_predictions).text(c)
        )  # fmt: skip
        t.add_row(
            escape(p.pipeline), m["training"].text(c), m["serving"].text(c),
            m["storage"].text(c), f"[bold]{m['total'].text(c)}[/]", p.total.text(c),
            _trend(p.trend), per_k, tops,
        )  # fmt: skip
    return t


def _rows_table(report: CostReport, pipeline: str) -> Table:
    p = next(x for x in report.pipelines if x.pipeline == pipeline)
    c = report.currency
    t = Table(title=f"{pipeline} by {report.by} (spent in the period)", title_justify="left")
    for col in (report.by or "key", "training", "serving", "storage", "total"):
        t.add_column(col, justify="left" if col == report.by else "right")
    for r in p.rows:
        cells: list[Sum] = [r.by_kind[k] for k in ("training", "serving", "storage")]
        key = segment_label(r.key) if report.by == "segment" else r.key
        t.add_row(escape(key), *(s.text(c) for s in cells), r.total.text(c))
    return t
