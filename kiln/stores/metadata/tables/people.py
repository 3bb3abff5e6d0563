"""The tables of people: users with a role, their API tokens and their web sessions.

Secrets are never stored: a token or a session id is kept as its SHA-256 (both are random
256-bit strings, so a fast hash is enough), a password as a salted scrypt hash.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from kiln.stores.metadata.tables.base import ROLES, Base, one_of


class User(Base):
    """A person (or a robot) who reads or changes what serves. ``pipelines`` is a glob of the
    pipeline names an owner may change (None: the pipelines whose ``owner`` is this user)."""

    __tablename__ = "users"
    __table_args__ = (one_of("role", ROLES),)

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    pipelines: Mapped[str | None] = mapped_column(sa.String(200))
    password_hash: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class ApiToken(Base):
    """A bearer token of one user; ``token_hash`` is the SHA-256 of the secret."""

    __tablename__ = "api_tokens"
    __table_args__ = (sa.Index("ix_api_tokens_user", "user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user: Mapped[str] = mapped_column(sa.ForeignKey("users.name"))
    label: Mapped[str] = mapped_column(sa.String(200))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class WebSession(Base):
    """A signed-in browser: the cookie holds the secret, this row its SHA-256, the CSRF token
    the session's forms carry, and when it expires."""

    __tablename__ = "web_sessions"
    __table_args__ = (sa.Index("ix_web_sessions_expires_at", "expires_at"),)

    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user: Mapped[str] = mapped_column(sa.ForeignKey("users.name"))
    csrf_token: Mapped[str] = mapped_column(sa.String(64))
    token_id: Mapped[int | None]
    """The token the user signed in with (None: the password): revoking it ends the session,
    as a new password ends the sessions opened with the old one."""
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
