"""What the `kiln` commands share: the consoles, the settings and stores of the global options,
who is asking (a user's token or the admin token) and whether they may, and small cell
formatters."""

from __future__ import annotations

import os
import sys
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from kiln.settings import Settings, load_settings

if TYPE_CHECKING:
    from kiln.registry.people import Principal


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
    typer.Option(
        envvar="KILN_TOKEN", show_default=False,
        help="Your token (`kiln tokens create`), or the admin token (KILN_TOKEN).",
    ),
]  # fmt: skip


def _sign_in(ctx: typer.Context, token: str | None) -> tuple[Principal, Any]:
    """Authenticate ``--token``/KILN_TOKEN: a user's token or the bootstrap admin token
    (KILN_ADMIN_TOKEN). A missing token is refused before any store is opened; the stores
    returned are the caller's to close."""
    from kiln.errors import AuthError
    from kiln.registry.people import People

    if not token:
        raise AuthError(
            "this needs a token (yours, or the admin token), and none was given",
            hint="pass --token or set KILN_TOKEN; an admin makes you one with"
            " `kiln tokens create USER`",
        )
    settings = _settings(ctx)
    stores = _stores(ctx)
    try:
        return People(stores.metadata, settings.admin_token).authenticate(token), stores
    except AuthError as e:
        stores.close()
        configured = settings.admin_token is not None and settings.admin_token.get_secret_value()
        if configured:
            raise
        raise AuthError(
            e.message, hint=f"{e.hint}; KILN_ADMIN_TOKEN is not set here, so only users' tokens"
            " are accepted",
        ) from None  # fmt: skip


def _actor_of(principal: Principal) -> str:
    """The audit log's actor: the user, or for the bootstrap admin token the OS user name."""
    return _actor() if principal.via == "bootstrap" else principal.name


def _authorize(uow: Any, principal: Principal, action: str, pipeline: str) -> None:
    """Refuse (ForbiddenError, exit 9) unless ``principal`` may ``action`` ``pipeline``, whose
    owner is read in ``uow``; an unknown pipeline has no owner (the command says it is
    missing to those who may change it)."""
    from kiln.errors import NotFoundError
    from kiln.registry.people import authorize

    try:
        owner: str | None = uow.pipelines.get(pipeline).owner
    except NotFoundError:
        owner = None
    authorize(principal, action, pipeline, owner)


def _stage_service(
    ctx: typer.Context, token: str | None, action: str, pipeline: str
) -> tuple[Any, Any, str]:
    """Authenticate the token, check that its principal may ``action`` ``pipeline``, then open
    the stage service: (stages, stores, the actor to audit). The caller closes the stores."""
    from kiln.registry.stages import Stages

    principal, stores = _sign_in(ctx, token)
    try:
        with stores.metadata.read() as uow:
            _authorize(uow, principal, action, pipeline)
    except BaseException:
        stores.close()
        raise
    return Stages(stores.metadata), stores, _actor_of(principal)


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
