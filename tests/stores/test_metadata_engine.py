"""Engines: SQLite settings, PostgreSQL URL rewriting, and errors that say what to do."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from kiln.errors import StoreError
from kiln.stores import MetadataStore
from kiln.stores.metadata import make_engine


def test_sqlite_engine_settings_and_parent_folder(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "kiln.db"
    engine = make_engine(f"sqlite:///{path}", create=True)
    try:
        assert path.parent.is_dir()
        with engine.connect() as conn:
            pragma = conn.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 30000
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgresql_url_is_rewritten_to_psycopg(pg_url: str) -> None:
    plain = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    assert plain.startswith("postgresql://")
    engine = make_engine(plain)
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("select 1").scalar() == 1
    finally:
        engine.dispose()


def test_unreachable_database_fails_fast_with_masked_url() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        MetadataStore("postgresql://postgres:s3cret@127.0.0.1:1/x")
    assert time.monotonic() - started < 6
    message = str(info.value)
    assert "cannot reach the metadata database at postgresql://postgres:***@127.0.0.1:1/x" in (
        message
    )
    assert "s3cret" not in message
    assert "KILN_DB_URL" in message and "--db" in message


def test_sqlite_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot reach the metadata database"):
        MetadataStore(f"sqlite:///{blocker / 'kiln.db'}", create=True)


@pytest.mark.parametrize("url", ["not a url", "mysql://u@h/db"])
def test_unusable_urls(url: str) -> None:
    with pytest.raises(StoreError, match="metadata database"):
        make_engine(url)


def test_constructor_neither_migrates_nor_writes(tmp_path: Path) -> None:
    path = tmp_path / "kiln.db"
    store = MetadataStore(f"sqlite:///{path}", create=True)
    try:
        assert sa.inspect(store.engine).get_table_names() == []
    finally:
        store.dispose()
