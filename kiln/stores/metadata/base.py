"""What every repository shares: the session, record conversion and a portable upsert."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kiln.errors import NotFoundError, StoreError
from kiln.stores.metadata import tables as t

__all__ = [
    "Repository",
    "check_aware",
    "check_choice",
    "chunks",
    "field_names",
    "insert_ignoring",
    "no_pipeline",
    "no_run",
    "now",
    "one_production_violated",
    "second_production",
    "to_record",
    "upsert",
]

R = TypeVar("R")
T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


_FIELDS: dict[type, tuple[str, ...]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    return names


def to_record(cls: type[R], source: Any) -> R:
    """Copy the record's fields from an ORM object or a Row (both expose them as attributes)."""
    return cls(**{name: getattr(source, name) for name in field_names(cls)})


IN_CHUNK = 500
"""The most values one ``IN (...)`` list carries (SQLite's and drivers' parameter limits)."""


def chunks(values: Iterable[T], size: int = IN_CHUNK) -> Iterator[list[T]]:
    """``values`` (in order, without duplicates) in lists of at most ``size``, for IN lists."""
    unique = list(dict.fromkeys(values))
    for i in range(0, len(unique), size):
        yield unique[i : i + size]


def check_aware(field: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} must be a timezone-aware datetime, got naive {value!r}")


def check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"invalid {field} {value!r}: expected one of {', '.join(allowed)}")


def upsert(
    session: Session,
    table: sa.Table,
    values: dict[str, Any],
    keys: builtins.list[str],
    changes: dict[str, Any],
) -> sa.Row[Any]:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET changes RETURNING *: one atomic statement."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        pg_stmt = postgresql.insert(table).values(**values)
        stmt: Any = pg_stmt.on_conflict_do_update(index_elements=keys, set_=changes)
    elif name == "sqlite":
        lite_stmt = sqlite.insert(table).values(**values)
        stmt = lite_stmt.on_conflict_do_update(index_elements=keys, set_=changes)
    else:
        raise StoreError(f"the metadata store does not support the {name} database")
    return session.execute(stmt.returning(*table.c)).one()


def insert_ignoring(
    session: Session,
    table: sa.Table,
    rows: builtins.list[dict[str, Any]],
    keys: builtins.list[str],
    where: Any = None,
) -> Any:
    """INSERT rows ... ON CONFLICT (keys [WHERE where]) DO NOTHING: rows that a unique key
    (or a partial unique index, with ``where``) refuses are skipped, without an error that
    would abort a PostgreSQL transaction. Add ``.returning(...)`` for the rows inserted."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif name == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise StoreError(f"the metadata store does not support the {name} database")
    return stmt.values(rows).on_conflict_do_nothing(index_elements=keys, index_where=where)


def one_production_violated(error: sa_exc.IntegrityError) -> bool:
    """Whether ``error`` is the database refusing a second production version of a pipeline."""
    lines = str(error.orig).strip().splitlines()
    first = lines[0] if lines else ""
    return t.ONE_PRODUCTION in first or first.endswith("failed: model_versions.pipeline")


def second_production(reason: str) -> StoreError:
    return StoreError(
        "refused a second production version of a pipeline (a pipeline has at most one;"
        f" another change of stages may have committed first): {reason}",
        hint="`kiln models list` shows the stages now; run the command again",
    )


class Repository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def _require_pipeline(self, name: str) -> None:
        found = self._session.scalar(sa.select(t.Pipeline.name).where(t.Pipeline.name == name))
        if found is None:
            raise no_pipeline(name)

    def _require_run(self, run_id: str) -> None:
        found = self._session.scalar(sa.select(t.Run.id).where(t.Run.id == run_id))
        if found is None:
            raise no_run(run_id)


def no_run(run_id: str) -> NotFoundError:
    return NotFoundError(f"no run {run_id!r}", hint="`kiln runs list` shows the runs")


def no_pipeline(name: str) -> NotFoundError:
    return NotFoundError(f"no pipeline {name!r}", hint="`kiln pipelines list` shows the pipelines")
