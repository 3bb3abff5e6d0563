"""The declarative base of the metadata tables: naming, the UTC datetime type, allowed values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
RUN_TRIGGERS = ("manual", "schedule", "resume", "drift", "performance")
STEP_STATUSES = ("running", "succeeded", "failed", "skipped")
TASK_STATUSES = ("succeeded", "failed")
STAGES = ("candidate", "shadow", "canary", "production", "archived", "blocked")
DEPLOYMENT_ACTIONS = ("promote", "rollback", "shadow", "unshadow", "archive", "canary", "block")
GATE_STATUSES = ("passed", "failed", "pending", "skipped")
GATE_TRIGGERS = ("run", "watch", "recheck")
FIRE_STATUSES = ("running", "succeeded", "blocked", "retrying", "failed", "skipped")
WINDOW_STATES = ("ok", "warn", "alert", "no_traffic")
ALERT_KINDS = ("drift", "performance", "latency", "errors", "traffic", "budget")
ALERT_LEVELS = ("warn", "alert")
ALERT_STATUSES = ("pending", "open", "resolved")
DELIVERY_EVENTS = ("opened", "resolved")
DELIVERY_STATUSES = ("pending", "delivered", "failed")
STORAGE_KINDS = ("packages", "snapshots", "captures", "labels")
ROLES = ("viewer", "owner", "admin")
ONE_PRODUCTION = "ux_model_versions_one_production"
ONE_EPISODE = "ux_alerts_one_episode"
PRODUCTION_WHERE = "stage = 'production'"
LIVE_EPISODE_WHERE = "status IN ('pending', 'open')"


def one_of(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f'"{column}" IN ({listed})', name=column)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the metadata store needs tz-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: sa.JSON(),
        list[str]: sa.JSON(),
    }


def table_of(model: type[Base]) -> sa.Table:
    """The model's Table, typed as one (``__table__`` is typed as a FromClause)."""
    table = model.__table__
    if not isinstance(table, sa.Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table
