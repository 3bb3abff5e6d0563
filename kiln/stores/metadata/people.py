"""Users, their API tokens and their web sessions (hashes only: see the tables)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import Repository, check_aware, check_choice, now, to_record
from kiln.stores.metadata.tables.base import ROLES

__all__ = [
    "SessionRecord",
    "SessionRepository",
    "TokenRecord",
    "TokenRepository",
    "UserRecord",
    "UserRepository",
]


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: str
    pipelines: str | None
    password_hash: str | None
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True)
class TokenRecord:
    id: int
    user: str
    label: str
    token_hash: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class SessionRecord:
    id_hash: str
    user: str
    csrf_token: str
    token_id: int | None
    created_at: datetime
    expires_at: datetime


class UserRepository(Repository):
    def add(
        self,
        name: str,
        role: str,
        *,
        pipelines: str | None = None,
        password_hash: str | None = None,
    ) -> UserRecord:
        check_choice("role", role, ROLES)
        row = t.User(
            name=name, role=role, pipelines=pipelines, password_hash=password_hash,
            created_at=now(), disabled_at=None,
        )  # fmt: skip
        self._session.add(row)
        self._session.flush()
        return to_record(UserRecord, row)

    def get(self, name: str) -> UserRecord | None:
        row = self._session.get(t.User, name)
        return None if row is None else to_record(UserRecord, row)

    def list(self) -> builtins.list[UserRecord]:
        q = sa.select(t.User).order_by(t.User.name)
        return [to_record(UserRecord, r) for r in self._session.scalars(q)]

    def update(
        self,
        name: str,
        *,
        role: str | None = None,
        pipelines: str | None = None,
        password_hash: str | None = None,
        disabled: bool | None = None,
    ) -> UserRecord | None:
        """Change what is given (``pipelines=""`` clears the pattern); None: no such user."""
        row = self._session.get(t.User, name, with_for_update=True)
        if row is None:
            return None
        if role is not None:
            check_choice("role", role, ROLES)
            row.role = role
        if pipelines is not None:
            row.pipelines = pipelines or None
        if password_hash is not None:
            row.password_hash = password_hash
        if disabled is not None:
            row.disabled_at = (row.disabled_at or now()) if disabled else None
        self._session.flush()
        return to_record(UserRecord, row)


class TokenRepository(Repository):
    def add(
        self, user: str, label: str, token_hash: str, *, expires_at: datetime | None = None
    ) -> TokenRecord:
        if expires_at is not None:
            check_aware("expires_at", expires_at)
        row = t.ApiToken(
            user=user, label=label, token_hash=token_hash, created_at=now(),
            expires_at=expires_at, revoked_at=None, last_used_at=None,
        )  # fmt: skip
        self._session.add(row)
        self._session.flush()
        return to_record(TokenRecord, row)

    def by_hash(self, token_hash: str) -> TokenRecord | None:
        q = sa.select(t.ApiToken).where(t.ApiToken.token_hash == token_hash)
        row = self._session.scalars(q).first()
        return None if row is None else to_record(TokenRecord, row)

    def get(self, token_id: int) -> TokenRecord | None:
        row = self._session.get(t.ApiToken, token_id)
        return None if row is None else to_record(TokenRecord, row)

    def list(self, user: str | None = None) -> builtins.list[TokenRecord]:
        q = sa.select(t.ApiToken).order_by(t.ApiToken.id)
        if user is not None:
            q = q.where(t.ApiToken.user == user)
        return [to_record(TokenRecord, r) for r in self._session.scalars(q)]

    def revoke(self, token_id: int) -> TokenRecord | None:
        """Revoke (idempotent: the first revocation time stays); None: no such token."""
        row = self._session.get(t.ApiToken, token_id, with_for_update=True)
        if row is None:
            return None
        row.revoked_at = row.revoked_at or now()
        self._session.flush()
        return to_record(TokenRecord, row)

    def touch(self, token_id: int, at: datetime) -> None:
        q = sa.update(t.ApiToken).where(t.ApiToken.id == token_id).values(last_used_at=at)
        self._session.execute(q)


class SessionRepository(Repository):
    def add(
        self,
        id_hash: str,
        user: str,
        csrf_token: str,
        expires_at: datetime,
        *,
        token_id: int | None = None,
    ) -> SessionRecord:
        check_aware("expires_at", expires_at)
        row = t.WebSession(
            id_hash=id_hash, user=user, csrf_token=csrf_token, token_id=token_id,
            created_at=now(), expires_at=expires_at,
        )  # fmt: skip
        self._session.add(row)
        self._session.flush()
        return to_record(SessionRecord, row)

    def get(self, id_hash: str) -> SessionRecord | None:
        row = self._session.get(t.WebSession, id_hash)
        return None if row is None else to_record(SessionRecord, row)

    def delete(self, id_hash: str) -> None:
        self._session.execute(sa.delete(t.WebSession).where(t.WebSession.id_hash == id_hash))

    def delete_user(self, user: str, *, password_only: bool = False) -> int:
        """End every session of ``user`` (disabled), or those opened with its password (a new
        password)."""
        q = sa.delete(t.WebSession).where(t.WebSession.user == user)
        if password_only:
            q = q.where(t.WebSession.token_id.is_(None))
        return int(self._session.execute(q).rowcount or 0)  # type: ignore[attr-defined]

    def delete_token(self, token_id: int) -> int:
        """End the sessions opened with token ``token_id`` (revoked)."""
        q = sa.delete(t.WebSession).where(t.WebSession.token_id == token_id)
        return int(self._session.execute(q).rowcount or 0)  # type: ignore[attr-defined]

    def purge_expired(self, at: datetime) -> int:
        q = sa.delete(t.WebSession).where(t.WebSession.expires_at <= at)
        return int(self._session.execute(q).rowcount or 0)  # type: ignore[attr-defined]
