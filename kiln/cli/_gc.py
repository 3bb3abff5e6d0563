"""`kiln gc`: delete what retention lets go (dry run by default), never what is still needed.

What is deleted and what is never deleted: :mod:`kiln.registry.gc`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kiln.cli._common import _actor, _stores, out
from kiln.config.base import parse_duration
from kiln.errors import ConfigError

if TYPE_CHECKING:
    from datetime import timedelta

    from kiln.registry.gc import GcPlan


def gc(
    ctx: typer.Context,
    apply: Annotated[bool, typer.Option("--apply", help="Delete (default: only list).")] = False,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline (no orphans).")] = None,
    grace: Annotated[
        str, typer.Option(help="Keep anything written more recently than this (30m, 1h, 2d).")
    ] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List (or with --apply delete) expired captures, labels and snapshots, and orphans.

    Retention: capture.retention, data.snapshot_retention (config of the newest run).

    Never deleted: the package of any registered version.

    Nor the snapshots of live versions and resumable runs, nor the captures the next replay,
    feature-availability or shadow gate reads or a gate's evidence names, nor anything younger
    than --grace. A run recorded running whose process is dead does not hold deletion up.
    """

    from kiln.registry.gc import apply_gc, plan_gc

    span = _grace(grace)
    stores = _stores(ctx)
    try:
        plan = plan_gc(stores, grace=span, pipeline=pipeline)
        if not apply:
            _show(plan, grace, applied=False, as_json=as_json)
            return
        result = apply_gc(stores, plan, actor=_actor(), pipeline=pipeline)
        done = plan.__class__(at=plan.at, grace=plan.grace, items=result.deleted, notes=plan.notes)
        if result.kept:
            done.notes.append(
                f"{len(result.kept)} listed item(s) kept: needed again when re-checked"
                " just before deleting"
            )
        _show(done, grace, applied=True, as_json=as_json)
    finally:
        stores.close()


def _grace(text: str) -> timedelta:
    from datetime import UTC, datetime

    try:
        span = parse_duration(text)
    except ValueError as e:
        raise ConfigError(
            f"--grace {text!r}: {e}", hint="for example --grace 1h or --grace 0s"
        ) from e
    except OverflowError:  # more days than a timedelta holds
        span = None
    if span is not None and span.total_seconds() < 0:
        raise ConfigError(f"--grace {text!r} is negative", hint="for example --grace 1h")
    try:  # gc keeps what was written since now - grace: that must be a date
        if span is not None:
            datetime.now(UTC) - span
            return span
    except OverflowError:
        pass
    raise ConfigError(
        f"--grace {text!r} is too long: it reaches back before the year 1",
        hint="for example --grace 1h, or --grace 3650d to keep ten years",
    )


def _show(plan: GcPlan, grace: str, *, applied: bool, as_json: bool) -> None:
    if as_json:
        out.print_json(data={"applied": applied, **plan.to_json()})
        return
    totals = plan.totals()
    verb = "deleted" if applied else "would delete"
    if not totals:
        out.print(f"nothing to delete (grace {grace})")
    else:
        table = Table(title=f"kiln gc: {verb} (grace {grace})")
        for col in ("pipeline", "kind", "files", "bytes"):
            table.add_column(col, justify="right" if col in ("files", "bytes") else "left")
        for name, kinds in sorted(totals.items()):
            for kind, slot in sorted(kinds.items()):
                table.add_row(escape(name), kind, f"{slot['files']:,}", f"{slot['bytes']:,}")
        out.print(table)
        total = sum(s["bytes"] for kinds in totals.values() for s in kinds.values())
        out.print(f"{verb} {total:,} bytes" + ("" if applied else "; run with --apply to delete"))
    for note in plan.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")
