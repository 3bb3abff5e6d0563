"""The release loop seen from the terminal: gate results and their evidence, re-running the
gates, the controller that moves live versions on, and the status of every pipeline."""

from __future__ import annotations

import json
import signal
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kiln.cli._common import _settings, _sigterm, _stores, out
from kiln.console import gate_table, status_table
from kiln.errors import KilnError
from kiln.stores.metadata.records import GateRecord


def gates_show(
    ctx: typer.Context,
    pipeline: str,
    version: int,
    as_json: Annotated[bool, typer.Option("--json", help="The full evidence as JSON.")] = False,
) -> None:
    """The gate results of VERSION with their evidence: the results its release decision was
    made on, then every other result (re-checks, earlier ones), oldest first."""
    stores = _stores(ctx)
    try:
        with stores.metadata.read() as uow:
            record = uow.versions.get(pipeline, version)
            results = uow.gates.for_version(pipeline, version)
            history = uow.gates.history(pipeline, version)
    finally:
        stores.close()
    shown = {g.id for g in results}
    others = [g for g in history if g.id not in shown]
    if as_json:
        doc = {
            "pipeline": pipeline, "version": version, "stage": record.stage,
            "gates": [_gate_doc(g) for g in results],
            "history": [_gate_doc(g) for g in history],
        }  # fmt: skip
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    if not results:
        out.print(f"{pipeline} v{version} ({record.stage}) has no gate results yet")
        return
    out.print(gate_table(results, f"gates of {pipeline} v{version} ({record.stage})"))
    for g in results:
        _evidence(g.gate, g.status, g.evidence)
    if others:
        t = Table("checked at", "trigger", "gate", "status", "against", "evidence",
                  title="other results (re-checks and earlier ones), oldest first",
                  title_justify="left")  # fmt: skip
        for g in others:
            t.add_row(
                f"{g.evaluated_at:%Y-%m-%d %H:%M:%S}", g.trigger, g.gate, g.status,
                f"v{g.champion_version}" if g.champion_version else "-", escape(g.summary),
            )  # fmt: skip
        out.print(t)


def _gate_doc(g: GateRecord) -> dict[str, Any]:
    return {
        "gate": g.gate, "status": g.status, "summary": g.summary,
        "evaluated_at": g.evaluated_at.isoformat(), "trigger": g.trigger,
        "champion_version": g.champion_version, "evidence": g.evidence,
    }  # fmt: skip


def _evidence(gate: str, status: str, evidence: dict[str, Any]) -> None:
    """The parts of a failed gate's evidence a reader needs first: what failed, where
    (`--json` has all of it)."""
    if status != "failed":
        return
    keys = ("regressed_segments", "lost_segments", "fallback_segments", "inconclusive_segments",
            "missing", "failures", "examples", "requests_without")  # fmt: skip
    for key in keys:
        value = evidence.get(key)
        if value:
            text = json.dumps(_first(value), default=str)
            out.print(Text(f"  {gate}.{key}: {text[:400]}"), highlight=False)


def _first(value: Any, n: int = 3) -> Any:
    """At most ``n`` items of each list, saying how many more there are."""
    if isinstance(value, list):
        rest = [f"... {len(value) - n} more"] if len(value) > n else []
        return [_first(v, n) for v in value[:n]] + rest
    if isinstance(value, dict):
        return {k: _first(v, n) for k, v in value.items()}
    return value


def gates_check(ctx: typer.Context, pipeline: str, version: int) -> None:
    """Run VERSION's pre-traffic gates again against the champion of its release decision and
    add the results to its history; no stage changes, no earlier result is replaced."""
    from kiln.release.controller import Release

    settings = _settings(ctx)
    stores = _stores(ctx)
    try:
        found = Release(settings, stores).evaluate(pipeline, version)
    finally:
        stores.close()
    against = f"v{found.champion}" if found.champion else "no production version"
    why = "the champion of its release decision" if found.as_decided else "production now"
    out.print(gate_table(found.results, f"re-check of {pipeline} v{version} against {against}"))
    out.print(
        f"judged against {against} ({why}); stored beside the earlier results, which stay"
        f" as they were: `kiln gates show {pipeline} {version}`"
    )


def watch(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline.")] = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    every: Annotated[float, typer.Option(min=0.1, help="Seconds between passes.")] = 30.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve the monitoring gauges (Prometheus) here."),
    ] = None,
) -> None:
    """Move live versions on: judge shadows whose period is over, promote or block canaries,
    roll back a new production version whose error rate or p99 passes its threshold; then
    monitor each pipeline's closed windows (drift, live metric, latency, errors, alerts)."""
    import time

    from kiln.monitoring.hook import MonitorHook, refresh_gauges, serve_gauges
    from kiln.release.controller import Release

    settings = _settings(ctx)
    stores = _stores(ctx)
    signal.signal(signal.SIGTERM, _sigterm)
    release = Release(settings, stores)
    hook = MonitorHook(settings, stores)
    if metrics_port is not None:
        serve_gauges(metrics_port)
    try:
        while True:
            events = release.tick(pipeline) if pipeline else release.tick_all()
            for event in events:
                out.print(Text(event.message), highlight=False)
            said = _monitor_all(stores, hook, pipeline)
            if metrics_port is not None:
                refresh_gauges(stores)
            if once:
                if not events and not said:
                    out.print("nothing to do")
                return
            time.sleep(every)
    finally:
        stores.close()


def _monitor_all(stores: Any, hook: Any, pipeline: str | None) -> bool:
    """One monitor pass per pipeline (each failure is logged, never stops the loop); whether
    anything was said."""
    if pipeline is not None:
        names = [pipeline]
    else:
        with stores.metadata.read() as uow:
            names = [p.name for p in uow.pipelines.list()]
    said = False
    for name in names:
        for line in hook(name):
            out.print(Text(f"{name}: {line}"), highlight=False)
            said = True
    return said


def status(ctx: typer.Context) -> None:
    """Every pipeline: production version and its age, last run, gates, canary, shadows,
    blocked versions."""
    from kiln.registry.status import pipeline_status

    stores = _stores(ctx)
    try:
        rows = pipeline_status(stores.metadata)
        problem = _monthly_costs(ctx, stores, rows)
    finally:
        stores.close()
    if not rows:
        out.print("no pipelines yet: `kiln run kiln.yaml` registers the first version")
        return
    out.print(status_table(rows))
    if problem:
        out.print(Text(f"$/month unknown: {problem}", style="yellow"), highlight=False)
    for row in rows:  # a version whose run died between registering and releasing it
        for advice in row.get("never_gated", ()):
            out.print(Text(f"! {row['pipeline']} {advice}", style="yellow"), highlight=False)


def _monthly_costs(ctx: typer.Context, stores: Any, rows: list[dict[str, Any]]) -> str | None:
    """Set each row's ``cost_per_month`` (the last 30 days, from stored measurements); the
    error when cost cannot be computed (status is still shown)."""
    from kiln.config.prices import resolve_prices
    from kiln.monitoring.cost.report import monthly_costs

    if not rows:
        return None
    try:
        prices = resolve_prices(_settings(ctx))
        costs = monthly_costs(
            stores.metadata, prices, now=datetime.now(UTC), pipelines=[r["pipeline"] for r in rows]
        )
    except KilnError as e:
        return str(e)
    for row in rows:
        found = costs.get(row["pipeline"])
        row["cost_per_month"] = None if found is None else found.text(prices.currency)
    return None
