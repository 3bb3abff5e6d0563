"""Alert episodes from the terminal: list them, and acknowledge one (the pipeline's owner or an
admin, by token; audited)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kiln.cli._common import _actor_of, _authorize, _num, _sign_in, _stores, _Token, out
from kiln.stores.metadata.alerts import AlertRecord

_STATUS_ORDER = {"open": 0, "pending": 1, "resolved": 2}
_LEVEL_COLOR = {"alert": "red", "warn": "yellow"}


def alerts_list(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline.")] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Resolved episodes too (default: open and pending).")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="How many episodes.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="The episodes as JSON.")] = False,
) -> None:
    """Alert episodes: open ones first (the most severe first), then pending ones (over a
    threshold for fewer windows than monitor.consecutive); --all adds resolved ones."""
    stores = _stores(ctx)
    try:
        with stores.metadata.read() as uow:
            found = uow.alerts.list(
                pipeline, status=None if show_all else ("pending", "open"), limit=limit
            )
    finally:
        stores.close()
    found.sort(key=lambda a: (_STATUS_ORDER[a.status], a.level != "alert"))  # stable: newest
    if as_json:
        sys.stdout.write(json.dumps([_doc(a) for a in found], indent=2) + "\n")
        return
    if not found:
        where = f" of {pipeline}" if pipeline else ""
        more = "" if show_all else "; `kiln alerts list --all` shows resolved ones too"
        out.print(f"no {'' if show_all else 'open or pending '}alerts{where}{more}")
        return
    t = Table("id", "pipeline", "check", "level", "status", "since", "streak",
              "value / threshold", "acked")  # fmt: skip
    for a in found:
        color = _LEVEL_COLOR[a.level] if a.status != "resolved" else "dim"
        since = a.opened_at if a.status == "open" and a.opened_at else a.first_window
        status = a.status
        if a.status == "resolved" and a.resolved_at:
            status = f"resolved {a.resolved_at:%Y-%m-%d %H:%M}"
        t.add_row(
            str(a.id), Text(a.pipeline), Text(a.check), f"[{color}]{a.level}[/]", status,
            f"{since:%Y-%m-%d %H:%M}", str(a.streak), f"{_num(a.value)} / {_num(a.threshold)}",
            Text(a.acked_by or "-"),
        )  # fmt: skip
    out.print(t)


def alerts_ack(
    ctx: typer.Context,
    alert_id: Annotated[
        int, typer.Argument(metavar="ID", help="The alert's id (kiln alerts list).")
    ],
    actor: Annotated[
        str | None,
        typer.Option(
            help="Who acknowledges it, with the admin token (default: your user name); a user's"
            " token acknowledges as that user. Audited."
        ),
    ] = None,
    note: Annotated[str | None, typer.Option(help="What is being done about it; audited.")] = None,
    token: _Token = None,
) -> None:
    """Acknowledge alert ID (the pipeline's owner or an admin): someone has seen it. Audited with
    the actor and note; an episode that already resolved can be acknowledged too."""
    principal, stores = _sign_in(ctx, token)
    try:
        who = _actor_of(principal)
        if principal.via == "bootstrap":
            who = (actor or "").strip() or who
        elif actor is not None and actor.strip() != principal.name:
            raise typer.BadParameter(
                f"{actor!r} is not you: your token acknowledges as {principal.name!r}; only the"
                " admin token names someone else",
                param_hint="--actor",
            )
        with stores.metadata.unit_of_work() as uow:
            before = uow.alerts.get(alert_id)
            _authorize(uow, principal, "ack", before.pipeline)
            acked = uow.alerts.ack(alert_id, who, note)
    finally:
        stores.close()
    what = f"alert {acked.id} ({acked.pipeline} {acked.check}, {acked.level})"
    out.print(f"[green]✓[/] {escape(what)} acknowledged by {escape(who)}", highlight=False)
    if before.status == "resolved":
        when = f" at {before.resolved_at:%Y-%m-%d %H:%M} UTC" if before.resolved_at else ""
        out.print(f"  it had already resolved{when}; the acknowledgement is recorded anyway")
    elif before.status == "pending":
        out.print("  it is still pending (it has not notified anyone yet)")
    if before.acked_by:
        out.print(
            f"  it replaces the acknowledgement by {escape(before.acked_by)}"
            f" at {before.acked_at:%Y-%m-%d %H:%M} UTC (both are in `kiln audit`)",
            highlight=False,
        )


def _doc(a: AlertRecord) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in asdict(a).items()}
