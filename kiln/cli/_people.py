"""People from the terminal: `kiln users add|list|disable|passwd` and `kiln tokens
create|list|revoke`. Managing people needs an admin's token (a user's, or KILN_ADMIN_TOKEN);
anyone may list and revoke their own tokens. Every change is audited (pipeline "") with the
actor, never a secret. Secrets come in on stdin and go out once, on stdout."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kiln.cli._common import _actor_of, _Reason, _sign_in, _Token, err, out

if TYPE_CHECKING:
    from kiln.registry.people import People, Principal
    from kiln.stores.metadata.people import TokenRecord, UserRecord

__all__ = ["tokens_app", "users_app"]

users_app = typer.Typer(no_args_is_help=True, help="People who may read or change pipelines.")
tokens_app = typer.Typer(no_args_is_help=True, help="API tokens of users (stored hashed).")

_Json = Annotated[bool, typer.Option("--json", help="As JSON.")]
_PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from one line of stdin (never an argument: those show in ps).",
    ),
]


def _people(ctx: typer.Context, token: str | None) -> tuple[People, Principal, Any]:
    """Who is asking (any user, or the admin token), People over the stores, and the stores
    (the caller closes them)."""
    from kiln.cli._common import _settings
    from kiln.registry.people import People

    principal, stores = _sign_in(ctx, token)
    return People(stores.metadata, _settings(ctx).admin_token), principal, stores


def _need_admin(principal: Principal, what: str) -> None:
    from kiln.errors import ForbiddenError

    if not principal.is_admin:
        raise ForbiddenError(
            f"{what} refused: {principal.name} is {_a(principal.role)}; managing people needs"
            " an admin",
            hint="ask an admin (`kiln users list` shows them) or use the admin token",
        )


def _a(role: str) -> str:
    return f"an {role}" if role[0] in "aeiou" else f"a {role}"


def _read_password(what: str) -> str:
    """One line of stdin, without its line ending (typed without echo on a terminal)."""
    from kiln.registry.people import PeopleError

    if sys.stdin.isatty():  # typed by hand: not echoed
        import getpass

        line = getpass.getpass(f"{what}: ")
    else:
        line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise PeopleError(
            f"no {what} on stdin", hint="e.g. `printf '%s\\n' \"$PASSWORD\" | kiln users ...`"
        )
    return line


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user's name (letters, digits, . _ @ -).")],
    role: Annotated[
        str,
        typer.Option(
            help="viewer (reads), owner (also changes its own pipelines) or admin (everything)."
        ),
    ],
    pipelines: Annotated[
        str | None,
        typer.Option(
            help="An owner's pipelines, as a glob ('flights-*'); without it, the pipelines"
            " whose kiln.yaml owner is NAME."
        ),
    ] = None,
    password_stdin: _PasswordStdin = False,
    token: _Token = None,
) -> None:
    """Add a user (admin). Without --password-stdin the user signs in with a token
    (`kiln tokens create NAME`)."""
    people, principal, stores = _people(ctx, token)
    try:
        _need_admin(principal, f"adding user {name!r}")
        password = _read_password("password") if password_stdin else None
        user = people.add_user(
            name, role, pipelines=pipelines, password=password, actor=_actor_of(principal)
        )
    finally:
        stores.close()
    what = f"user {user.name} added: {user.role}"
    if user.pipelines:
        what += f" of pipelines {user.pipelines}"
    elif user.role == "owner":
        what += f" of the pipelines whose owner is {user.name}"
    out.print(f"[green]✓[/] {escape(what)}", highlight=False)
    if password is None:
        out.print(
            f"  {escape(user.name)} has no password: `kiln tokens create {escape(user.name)}`"
            " gives a token to sign in with",
            highlight=False,
        )


@users_app.command("list")
def users_list(ctx: typer.Context, as_json: _Json = False, token: _Token = None) -> None:
    """Every user: role, pipelines, how they sign in, live tokens (admin)."""
    people, principal, stores = _people(ctx, token)
    try:
        _need_admin(principal, "listing users")
        users, tokens = people.users(), people.tokens()
    finally:
        stores.close()
    now = datetime.now(UTC)
    live: dict[str, int] = {}
    for record in tokens:
        if _token_status(record, now) == "active":
            live[record.user] = live.get(record.user, 0) + 1
    if as_json:
        docs = [_user_doc(u, live.get(u.name, 0)) for u in users]
        sys.stdout.write(json.dumps(docs, indent=2) + "\n")
        return
    if not users:
        out.print("no users yet; `kiln users add NAME --role owner` adds one")
        return
    t = Table("name", "role", "pipelines", "password", "tokens", "created", "status")
    for u in users:
        status = "active" if u.disabled_at is None else f"disabled {u.disabled_at:%Y-%m-%d}"
        mine = u.pipelines or (f"owner = {u.name}" if u.role == "owner" else "all")
        t.add_row(
            Text(u.name), u.role, Text(mine), "yes" if u.password_hash else "no",
            str(live.get(u.name, 0)), f"{u.created_at:%Y-%m-%d %H:%M}", status,
        )  # fmt: skip
    out.print(t)


@users_app.command("disable")
def users_disable(ctx: typer.Context, name: str, token: _Token = None) -> None:
    """Disable a user (admin): its tokens and web sessions stop working at once."""
    people, principal, stores = _people(ctx, token)
    try:
        _need_admin(principal, f"disabling user {name!r}")
        people.disable(name, actor=_actor_of(principal))
    finally:
        stores.close()
    out.print(
        f"[green]✓[/] user {escape(name)} disabled: its tokens and sessions no longer work",
        highlight=False,
    )


def transfer(
    ctx: typer.Context,
    pipeline: str,
    owner: str,
    reason: _Reason = None,
    token: _Token = None,
) -> None:
    """Give PIPELINE to OWNER (admin; audited): a run cannot change who owns a pipeline."""
    from kiln.registry.ownership import transfer as give

    _, principal, stores = _people(ctx, token)
    try:
        _need_admin(principal, f"giving {pipeline!r} to {owner!r}")
        before = give(stores.metadata, pipeline, owner, actor=_actor_of(principal), reason=reason)
    finally:
        stores.close()
    out.print(
        f"[green]✓[/] {escape(pipeline)}: owner {escape(before)} -> {escape(owner)}",
        highlight=False,
    )


@users_app.command("passwd")
def users_passwd(
    ctx: typer.Context, name: str, password_stdin: _PasswordStdin = False, token: _Token = None
) -> None:
    """Set a user's password (admin), read from one line of stdin."""
    if not password_stdin:
        raise typer.BadParameter(
            "the new password is read from stdin: pass --password-stdin"
            " (a password is never an argument: arguments show in ps and shell history)",
            param_hint="--password-stdin",
        )
    people, principal, stores = _people(ctx, token)
    try:
        _need_admin(principal, f"setting the password of {name!r}")
        people.set_password(name, _read_password("password"), actor=_actor_of(principal))
    finally:
        stores.close()
    out.print(f"[green]✓[/] password of {escape(name)} set", highlight=False)


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Whose token.")],
    label: Annotated[str, typer.Option(help="What it is for ('laptop', 'ci').")] = "",
    expires: Annotated[
        str | None, typer.Option(help="Lifetime such as 30d, 12h or 2w (default: never).")
    ] = None,
    as_json: _Json = False,
    token: _Token = None,
) -> None:
    """A new token of USER (admin). Its secret is printed once, on stdout; only its hash is
    stored, so nobody can show it again."""
    lifetime = _lifetime(expires)
    people, principal, stores = _people(ctx, token)
    try:
        _need_admin(principal, f"a token for {user!r}")
        record, secret = people.create_token(
            user, label, expires_in=lifetime, actor=_actor_of(principal)
        )
    finally:
        stores.close()
    note = "shown once: Kiln stores only its hash, so it cannot be shown again; copy it now"
    if as_json:
        doc = _token_doc(record, datetime.now(UTC)) | {"secret": secret, "note": note}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    sys.stdout.write(secret + "\n")
    sys.stdout.flush()
    until = "never expires" if record.expires_at is None else f"expires {_when(record.expires_at)}"
    err.print(
        f"token {record.id} of {escape(record.user)} ({escape(record.label)}, {until}): the"
        f" secret above is {note}",
        highlight=False,
    )


@tokens_app.command("list")
def tokens_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's tokens.")] = None,
    as_json: _Json = False,
    token: _Token = None,
) -> None:
    """Tokens: id, user, label, dates and status; never a secret (admin; anyone sees their
    own)."""
    people, principal, stores = _people(ctx, token)
    try:
        if not principal.is_admin:
            if user not in (None, principal.name):
                _need_admin(principal, f"listing the tokens of {user!r}")
            user = principal.name
        found = people.tokens(user)
    finally:
        stores.close()
    now = datetime.now(UTC)
    if as_json:
        sys.stdout.write(json.dumps([_token_doc(r, now) for r in found], indent=2) + "\n")
        return
    if not found:
        out.print(f"no tokens{f' of {escape(user)}' if user else ''}", highlight=False)
        return
    t = Table("id", "user", "label", "created", "expires", "last used", "status")
    for r in found:
        t.add_row(
            str(r.id), Text(r.user), Text(r.label), _when(r.created_at),
            _when(r.expires_at) if r.expires_at else "never",
            _when(r.last_used_at) if r.last_used_at else "-", _token_status(r, now),
        )  # fmt: skip
    out.print(t)


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context,
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The id (`kiln tokens list`).")],
    token: _Token = None,
) -> None:
    """Revoke token ID at once (admin; anyone may revoke their own)."""
    from kiln.errors import NotFoundError

    people, principal, stores = _people(ctx, token)
    try:
        if not principal.is_admin:
            with stores.metadata.read() as uow:
                record = uow.tokens.get(token_id)
            if record is None or record.user != principal.name:  # others' ids are not told
                raise NotFoundError(
                    f"no token of yours with id {token_id}",
                    hint="`kiln tokens list` shows yours; an admin revokes others'",
                )
        revoked = people.revoke_token(token_id, actor=_actor_of(principal))
    finally:
        stores.close()
    out.print(
        f"[green]✓[/] token {revoked.id} of {escape(revoked.user)} ({escape(revoked.label)})"
        f" revoked at {_when(revoked.revoked_at)}: it no longer works",
        highlight=False,
    )


def _lifetime(expires: str | None) -> timedelta | None:
    from kiln.config.base import parse_duration

    if expires is None:
        return None
    try:
        lifetime = parse_duration(expires)
    except (ValueError, OverflowError):
        lifetime = timedelta(0)
    if lifetime <= timedelta(0):
        raise typer.BadParameter(
            f"{expires!r} is not a lifetime; use e.g. 30d, 12h or 2w", param_hint="--expires"
        )
    return lifetime


def _when(at: datetime | None) -> str:
    return "-" if at is None else f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _token_status(record: TokenRecord, now: datetime) -> str:
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _token_doc(record: TokenRecord, now: datetime) -> dict[str, Any]:
    """What a token's listing shows: never its secret, nor its hash."""
    return {
        "id": record.id, "user": record.user, "label": record.label,
        "created_at": _iso(record.created_at), "expires_at": _iso(record.expires_at),
        "last_used_at": _iso(record.last_used_at), "revoked_at": _iso(record.revoked_at),
        "status": _token_status(record, now),
    }  # fmt: skip


def _user_doc(user: UserRecord, live_tokens: int) -> dict[str, Any]:
    """What a user's listing shows: never its password hash."""
    return {
        "name": user.name, "role": user.role, "pipelines": user.pipelines,
        "password": user.password_hash is not None, "tokens": live_tokens,
        "created_at": _iso(user.created_at), "disabled_at": _iso(user.disabled_at),
    }  # fmt: skip
