"""People: users with a role, their API tokens and their web sessions; who may change what.

A user is a ``viewer`` (reads), an ``owner`` (also changes its own pipelines: those whose name
matches its ``pipelines`` glob or, without one, whose ``owner`` is the user) or an ``admin``
(changes every pipeline and manages people). ``KILN_ADMIN_TOKEN`` stays the bootstrap admin.
Secrets are kept hashed: tokens and session ids (random 256-bit strings) as SHA-256, passwords
as salted scrypt. Every refusal of a secret says the same thing whatever was wrong with it
(unknown user, wrong password, revoked or expired token), so that it leaks nothing.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import SecretStr

from kiln.errors import AuthError, ForbiddenError, KilnError, NotFoundError
from kiln.stores import MetadataStore, UnitOfWork
from kiln.stores.metadata.people import TokenRecord, UserRecord

__all__ = [
    "AUDIT_PIPELINE",
    "ROLES",
    "WRITE_ACTIONS",
    "People",
    "PeopleError",
    "Principal",
    "WebSessionOpened",
    "authorize",
    "hash_password",
    "hash_secret",
    "new_secret",
    "verify_password",
]

Role = Literal["viewer", "owner", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "owner", "admin")
WRITE_ACTIONS = ("promote", "rollback", "override", "block", "shadow", "run", "resume", "ack")
"""What an owner may do to its own pipelines and an admin to every one; viewers only read."""

AUDIT_PIPELINE = ""
"""The audit log's ``pipeline`` of a change to people (``user.add``, ``token.create``...): none."""
TOKEN_PREFIX = "kiln_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$")
_REFUSED = "the user name, password or token is not valid"
_REFUSED_HINT = "check it, or ask an admin for a new token (`kiln tokens create USER`)"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class PeopleError(KilnError):
    """A user or token that cannot be added or changed as asked."""

    exit_code = 2
    code = "people_error"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user (by token or session) or the bootstrap admin token."""

    name: str
    role: Role
    pipelines: str | None = None
    via: Literal["token", "session", "bootstrap"] = "token"
    token_id: int | None = field(default=None, compare=False)
    """The token it authenticated with (None: a password or the bootstrap token)."""

    def may_change(self, pipeline: str, owner: str | None = None) -> bool:
        """Whether this principal may change what serves ``pipeline`` (owned by ``owner``)."""
        if self.role == "admin":
            return True
        if self.role != "owner":
            return False
        if self.pipelines:
            return fnmatch.fnmatchcase(pipeline, self.pipelines)
        return owner is not None and owner == self.name

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def authorize(principal: Principal, action: str, pipeline: str, owner: str | None) -> None:
    """Raise ForbiddenError unless ``principal`` may do ``action`` to ``pipeline``."""
    if action not in WRITE_ACTIONS:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(WRITE_ACTIONS)}")
    if principal.may_change(pipeline, owner):
        return
    if principal.role == "viewer":
        why = f"{principal.name} is a viewer: viewers read, they do not {action}"
    else:
        mine = principal.pipelines or f"pipelines owned by {principal.name}"
        why = f"{principal.name} owns {mine}, not {pipeline!r}"
    raise ForbiddenError(
        f"{action} of {pipeline!r} refused: {why}",
        hint=f"ask an admin or the owner of {pipeline!r} ({owner or 'unknown'})",
    )


def new_secret() -> str:
    """A fresh token or session secret: 256 random bits, URL-safe, with a recognisable prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    b64 = base64.b64encode
    params = f"{_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}"
    return f"scrypt${params}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(expected),
        )  # fmt: skip
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def _refused() -> AuthError:
    return AuthError(_REFUSED, hint=_REFUSED_HINT)


@dataclass(frozen=True, slots=True)
class WebSessionOpened:
    secret: str
    """What the cookie holds (only its hash is stored)."""
    csrf_token: str
    expires_at: datetime


class People:
    """Users, tokens and sessions over a metadata store, and authentication.

    ``admin_token`` is the bootstrap admin (``KILN_ADMIN_TOKEN``): it authenticates as an admin
    named ``bootstrap_name`` without any user in the database.
    """

    def __init__(
        self,
        metadata: MetadataStore,
        admin_token: SecretStr | None = None,
        *,
        bootstrap_name: str = "admin",
    ) -> None:
        self._metadata = metadata
        self._admin = "" if admin_token is None else admin_token.get_secret_value()
        self._bootstrap = bootstrap_name

    # users ---------------------------------------------------------------------------------
    def add_user(
        self,
        name: str,
        role: str,
        *,
        pipelines: str | None = None,
        password: str | None = None,
        actor: str | None = None,
    ) -> UserRecord:
        """Add a user; ``actor`` (who adds it) records a ``user.add`` audit event with it."""
        if not _NAME.match(name):
            raise PeopleError(
                f"user name {name[:80]!r} is not valid",
                hint="1-200 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
            )
        if role not in ROLES:
            raise PeopleError(
                f"role {role!r} is not one of {', '.join(ROLES)}", hint="--role owner"
            )
        if pipelines is not None and role != "owner":
            raise PeopleError(
                f"--pipelines is for owners; a {role} reads (viewer) or changes (admin) them all",
                hint="drop --pipelines, or use --role owner",
            )
        if password is not None:
            _check_password(password)
        hashed = hash_password(password) if password else None
        with self._metadata.unit_of_work() as uow:
            if uow.users.get(name) is not None:
                raise PeopleError(
                    f"user {name!r} exists", hint="`kiln users list` shows every user"
                )
            user = uow.users.add(name, role, pipelines=pipelines, password_hash=hashed)
            details = {"user": name, "role": role, "pipelines": pipelines}
            _audit(uow, actor, "user.add", details | {"password": hashed is not None})
            return user

    def set_password(self, name: str, password: str, *, actor: str | None = None) -> None:
        _check_password(password)
        with self._metadata.unit_of_work() as uow:
            if uow.users.update(name, password_hash=hash_password(password)) is None:
                raise _no_user(name)
            uow.web_sessions.delete_user(name, password_only=True)  # the old password's
            _audit(uow, actor, "user.passwd", {"user": name})

    def disable(self, name: str, *, actor: str | None = None) -> UserRecord:
        """Disable a user: its tokens and sessions stop working at once."""
        with self._metadata.unit_of_work() as uow:
            user = uow.users.update(name, disabled=True)
            if user is None:
                raise _no_user(name)
            uow.web_sessions.delete_user(name)
            _audit(uow, actor, "user.disable", {"user": name})
            return user

    def users(self) -> list[UserRecord]:
        with self._metadata.read() as uow:
            return uow.users.list()

    # tokens --------------------------------------------------------------------------------
    def create_token(
        self,
        user: str,
        label: str = "",
        *,
        expires_in: timedelta | None = None,
        actor: str | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new token of ``user``: its record and the secret, shown once and never stored."""
        secret = new_secret()
        expires = datetime.now(UTC) + expires_in if expires_in is not None else None
        with self._metadata.unit_of_work() as uow:
            found = uow.users.get(user)
            if found is None:
                raise _no_user(user)
            if found.disabled_at is not None:
                raise PeopleError(
                    f"user {user!r} is disabled", hint="a disabled user gets no token"
                )
            record = uow.tokens.add(user, label or "token", hash_secret(secret), expires_at=expires)
            _audit(uow, actor, "token.create", _token_details(record))
        return record, secret

    def revoke_token(self, token_id: int, *, actor: str | None = None) -> TokenRecord:
        with self._metadata.unit_of_work() as uow:
            record = uow.tokens.revoke(token_id)
            if record is None:
                raise NotFoundError(
                    f"no token with id {token_id}", hint="`kiln tokens list` shows the ids"
                )
            uow.web_sessions.delete_token(token_id)  # signed in with it: signed out now
            _audit(uow, actor, "token.revoke", _token_details(record))
        return record

    def tokens(self, user: str | None = None) -> list[TokenRecord]:
        with self._metadata.read() as uow:
            return uow.tokens.list(user)

    # authentication ------------------------------------------------------------------------
    def authenticate(self, token: str | None) -> Principal:
        """The principal of a bearer token (a user's, or the bootstrap admin token)."""
        if not token:
            raise AuthError(
                "this needs a token, and none was given",
                hint="pass --token or KILN_TOKEN (CLI), or `Authorization: Bearer TOKEN` (API)",
            )
        if self._admin and hmac.compare_digest(token.encode(), self._admin.encode()):
            return Principal(self._bootstrap, "admin", via="bootstrap")
        now = datetime.now(UTC)
        with self._metadata.read() as uow:  # no write lock: a busy writer never delays a read
            record = uow.tokens.by_hash(hash_secret(token))
            user = uow.users.get(record.user) if record is not None else None
        if record is None or record.revoked_at is not None or user is None:
            raise _refused()
        if record.expires_at is not None and record.expires_at <= now:
            raise _refused()
        if user.disabled_at is not None:
            raise _refused()
        if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=1):
            try:  # when it was last used is a courtesy: never worth failing the request
                with self._metadata.unit_of_work() as uow:
                    uow.tokens.touch(record.id, now)
            except KilnError:
                pass
        return replace(_principal(user, "token"), token_id=record.id)

    def login(self, name: str, secret: str) -> Principal:
        """Sign in with a user name and its password, or one of its tokens."""
        with self._metadata.read() as uow:
            user = uow.users.get(name)
        # One scrypt whatever the case (no user, no password, wrong one): the time says nothing.
        stored = user.password_hash if user is not None else None
        matched = verify_password(secret, stored or _DUMMY) and stored is not None
        if user is None or user.disabled_at is not None:
            raise _refused()
        if matched:
            return _principal(user, "session")
        try:
            principal = self.authenticate(secret)
        except AuthError:
            raise _refused() from None
        if principal.name != name or principal.via == "bootstrap":
            raise _refused()
        return replace(_principal(user, "session"), token_id=principal.token_id)

    def open_session(self, principal: Principal, ttl: timedelta) -> WebSessionOpened:
        """A web session for ``principal`` (a user; the bootstrap admin signs in as ``admin``
        only if such a user exists)."""
        secret, csrf = new_secret(), secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + ttl
        with self._metadata.unit_of_work() as uow:
            uow.web_sessions.purge_expired(datetime.now(UTC))
            uow.web_sessions.add(
                hash_secret(secret), principal.name, csrf, expires, token_id=principal.token_id
            )
        return WebSessionOpened(secret, csrf, expires)

    def session(self, secret: str | None) -> tuple[Principal, str]:
        """The principal and CSRF token of a live session; AuthError when it is unknown or
        expired (the message says to sign in again)."""
        expired = AuthError(
            "your session has expired or was ended", hint="sign in again on the login page"
        )
        if not secret:
            raise expired
        now = datetime.now(UTC)
        with self._metadata.read() as uow:
            record = uow.web_sessions.get(hash_secret(secret))
            user = uow.users.get(record.user) if record is not None else None
            token = (
                uow.tokens.get(record.token_id)
                if record is not None and record.token_id is not None
                else None
            )
        if record is None or user is None or user.disabled_at is not None:
            raise expired
        if record.expires_at <= now:
            raise expired
        if record.token_id is not None and (  # signed in with a token since revoked or expired
            token is None
            or token.revoked_at is not None
            or (token.expires_at is not None and token.expires_at <= now)
        ):
            raise expired
        return replace(_principal(user, "session"), token_id=record.token_id), record.csrf_token

    def close_session(self, secret: str | None) -> None:
        if not secret:
            return
        with self._metadata.unit_of_work() as uow:
            uow.web_sessions.delete(hash_secret(secret))


_DUMMY = hash_password("timing-equaliser")


def _principal(user: UserRecord, via: Literal["token", "session"]) -> Principal:
    role: Role = user.role  # type: ignore[assignment]  # the table's check constraint holds it
    return Principal(user.name, role, user.pipelines, via)


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise PeopleError("a password needs at least 8 characters", hint="choose a longer one")


def _audit(uow: UnitOfWork, actor: str | None, action: str, details: dict[str, Any]) -> None:
    """One audit event of a change to people, in the change's transaction (no secret in it)."""
    if actor is not None:
        uow.audit.record(actor, action, AUDIT_PIPELINE, details=details)


def _token_details(record: TokenRecord) -> dict[str, Any]:
    expires = None if record.expires_at is None else record.expires_at.isoformat()
    return {"user": record.user, "token_id": record.id, "label": record.label, "expires": expires}


def _no_user(name: str) -> NotFoundError:
    return NotFoundError(f"no user named {name!r}", hint="`kiln users list` shows every user")
