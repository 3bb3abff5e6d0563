"""Stage changes by hand (the pipeline's owner or an admin, by token): promote, roll back,
shadow, override a blocked version; and the audit log that records each of them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from kiln.cli._common import _changed, _Reason, _stage_service, _stores, _Token, out


def promote(
    ctx: typer.Context, pipeline: str, version: int, reason: _Reason = None, token: _Token = None
) -> None:
    """Make VERSION the production version of PIPELINE (its owner or an admin); the previous one
    is archived."""
    stages, stores, actor = _stage_service(ctx, token, "promote", pipeline)
    try:
        _changed(stages.promote(pipeline, version, actor=actor, reason=reason))
    finally:
        stores.close()


def rollback(
    ctx: typer.Context, pipeline: str, reason: _Reason = None, token: _Token = None
) -> None:
    """Put back the version that served PIPELINE before the current one (its owner or an
    admin)."""
    stages, stores, actor = _stage_service(ctx, token, "rollback", pipeline)
    try:
        _changed(stages.rollback(pipeline, actor=actor, reason=reason))
    finally:
        stores.close()


def shadow(
    ctx: typer.Context,
    pipeline: str,
    version: int,
    off: Annotated[bool, typer.Option("--off", help="Stop shadowing VERSION.")] = False,
    reason: _Reason = None,
    token: _Token = None,
) -> None:
    """Serve VERSION in shadow beside production (its owner or an admin); --off stops it."""
    stages, stores, actor = _stage_service(ctx, token, "shadow", pipeline)
    try:
        change = stages.unshadow if off else stages.set_shadow
        _changed(change(pipeline, version, actor=actor, reason=reason))
    finally:
        stores.close()


def override(
    ctx: typer.Context,
    pipeline: str,
    version: int,
    reason: Annotated[
        str | None, typer.Option(help="Why this blocked version may serve (required, audited).")
    ] = None,
    token: _Token = None,
) -> None:
    """Promote a BLOCKED version despite its gates (its owner or an admin; the reason is
    audited)."""
    from kiln.registry.stages import StageError

    if not (reason or "").strip():
        raise StageError(
            f"overriding the gates of {pipeline} v{version} needs a reason",
            hint='pass --reason "why this version may serve despite its gates"',
        )
    stages, stores, actor = _stage_service(ctx, token, "override", pipeline)
    try:
        _changed(stages.override(pipeline, version, actor=actor, reason=reason or ""))
    finally:
        stores.close()


def audit(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many events.")] = 50,
) -> None:
    """The audit log, newest first: who changed what, when, and why."""
    stores = _stores(ctx)
    try:
        with stores.metadata.read() as uow:
            events = uow.audit.list(pipeline=pipeline, limit=limit)
    finally:
        stores.close()
    t = Table("at", "actor", "action", "pipeline", "version", "reason", "details")
    for e in events:
        details = " ".join(f"{k}={v}" for k, v in (e.details or {}).items() if v is not None)
        t.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}", Text(e.actor), e.action, Text(e.pipeline),
            f"v{e.version}" if e.version is not None else "-", Text(e.reason or ""),
            Text(details[:80]),
        )  # fmt: skip
    out.print(t)
