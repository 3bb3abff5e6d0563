"""What the `kiln` commands share: the consoles, the settings and stores of the global options,
the admin-token check, and small cell formatters."""

from __future__ import annotations

import os
import sys
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from kiln.settings import Settings, load_settings


def _width(stream: Any) -> int | None:
    """Piped output (CI logs, files) gets a wide page instead of Rich's 80-column default,
    unless COLUMNS says how wide (Rich reads it)."""
    return None if stream.isatty() or os.environ.get("COLUMNS", "").isdigit() else 160


out = Console(width=_width(sys.stdout))
err = Console(stderr=True, width=_width(sys.stderr))
_state: dict[str, Any] = {"debug": False}


def _settings(ctx: typer.Context, **more: Any) -> Settings:
    return load_settings(**ctx.obj, **{k: v for k, v in more.items() if v is not None})


def _stores(ctx: typer.Context, *, upgrade: bool = False, **more: Any) -> Any:
    from kiln.stores import open_stores

    return open_stores(_settings(ctx, **more), upgrade=upgrade)


def _sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


_Reason = Annotated[str | None, typer.Option(help="Why; kept in the audit log.")]
_Token = Annotated[
    str | None,
    typer.Option(envvar="KILN_TOKEN", show_default=False, help="The admin token (KILN_TOKEN)."),
]


def _stage_service(ctx: typer.Context, token: str | None) -> tuple[Any, Any]:
    """Check the admin token (before touching any store), then open the stage service."""
    from kiln.registry.auth import check_admin
    from kiln.registry.stages import Stages

    check_admin(_settings(ctx).admin_token, token)
    stores = _stores(ctx)
    return Stages(stores.metadata), stores


def _actor() -> str:
    import getpass
    import os

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the password database
        return f"uid {os.getuid()}"


def _changed(change: Any) -> None:
    from rich.markup import escape

    mark = "[green]✓[/]" if change.changed else "[yellow]=[/]"
    out.print(f"{mark} {escape(str(change))}", highlight=False)


def _status(s: str) -> str:
    color = {"succeeded": "green", "failed": "red", "running": "cyan", "interrupted": "yellow"}
    color |= {"blocked": "red", "retrying": "yellow", "skipped": "yellow"}
    return f"[{color.get(s, 'white')}]{s}[/]"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / 2**20:.0f}"
