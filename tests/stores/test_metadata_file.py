"""The SQLite file under faults: a missing file is an error (never a new empty database), a
replaced file refuses writes, and reads do not wait behind a held write lock."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from typer.testing import CliRunner

from kiln.cli import app
from kiln.errors import StoreError
from kiln.stores import MetadataStore
from kiln.stores.metadata.engine import unreachable


def _created(path: Path) -> MetadataStore:
    store = MetadataStore(f"sqlite:///{path}", create=True)
    store.upgrade()
    return store


def test_a_read_open_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "home" / "kiln.db"
    with pytest.raises(StoreError) as info:
        MetadataStore(f"sqlite:///{path}")
    message = str(info.value)
    assert str(path) in message and "does not exist" in message
    assert "kiln db upgrade" in message and "KILN_HOME" in message
    assert not path.parent.exists()


def test_kiln_status_on_a_missing_file_fails_and_creates_nothing(tmp_path: Path, cli) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = cli("--home", str(home), "status", cwd=tmp_path)
    assert result.returncode == 7, result.stderr  # StoreError
    assert str(home / "kiln.db") in result.stderr and "kiln db upgrade" in result.stderr
    assert list(home.iterdir()) == []


def test_db_upgrade_creates_the_file_and_then_reads_open_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert CliRunner().invoke(app, ["--home", str(home), "db", "upgrade"]).exit_code == 0
    assert (home / "kiln.db").is_file()
    result = CliRunner().invoke(app, ["--home", str(home), "status"])
    assert result.exit_code == 0, result.output
    assert "no pipelines yet" in result.output


def test_a_replaced_file_refuses_writes_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "kiln.db"
    store = _created(path)
    try:
        with store.unit_of_work() as uow:
            uow.pipelines.upsert("before", "a@b.c", "", "kiln.yaml")
        assert store.replaced() is None
        path.rename(tmp_path / "moved.db")
        assert "missing" in (store.replaced() or "")
        refused = "moved, deleted or replaced"
        with pytest.raises(StoreError, match=refused), store.unit_of_work() as uow:
            uow.pipelines.upsert("lost", "a@b.c", "", "kiln.yaml")
        with pytest.raises(StoreError, match=refused), store.read() as uow:
            uow.pipelines.list()
        (tmp_path / "moved.db").rename(path)  # the same file is back: it is used again
        assert store.replaced() is None
        with store.read() as uow:
            assert [p.name for p in uow.pipelines.list()] == ["before"]
    finally:
        store.dispose()


def test_reopen_follows_another_file_put_in_place(tmp_path: Path) -> None:
    path = tmp_path / "kiln.db"
    store = _created(path)
    other = _created(tmp_path / "other.db")
    try:
        with other.unit_of_work() as uow:
            uow.pipelines.upsert("other", "a@b.c", "", "kiln.yaml")
        other.dispose()
        for suffix in ("", "-wal", "-shm"):  # the old file with its WAL, as one must move it
            Path(f"{path}{suffix}").rename(tmp_path / f"old.db{suffix}")
        (tmp_path / "other.db").rename(path)
        assert "replaced" in (store.replaced() or "")
        store.reopen()
        assert store.replaced() is None
        with store.read() as uow:
            assert [p.name for p in uow.pipelines.list()] == ["other"]
    finally:
        store.dispose()


@pytest.fixture
def held_write_lock(tmp_path: Path) -> Iterator[Path]:
    """A SQLite Kiln database whose write lock another connection holds (an insert, not
    committed) until the test ends."""
    path = tmp_path / "home" / "kiln.db"
    _created(path).dispose()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE hold (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO hold VALUES (1)")
    try:
        yield path
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_kiln_status_does_not_wait_behind_a_held_write_lock(held_write_lock: Path) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(app, ["--home", str(held_write_lock.parent), "status"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert elapsed < 5, f"kiln status took {elapsed:.1f} s behind a write lock"


def test_a_read_unit_of_work_cannot_write(tmp_path: Path) -> None:
    store = _created(tmp_path / "kiln.db")
    try:
        with pytest.raises(StoreError, match="read-only"), store.read() as uow:
            uow.pipelines.upsert("nope", "a@b.c", "", "kiln.yaml")
        with store.read() as uow:
            assert uow.pipelines.list() == []
    finally:
        store.dispose()


def test_the_busy_hint_fits_sqlite(held_write_lock: Path) -> None:
    waiting = sqlite3.connect(held_write_lock, timeout=0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError) as info:
            waiting.execute("BEGIN IMMEDIATE")
    finally:
        waiting.close()
    error = unreachable(f"sqlite:///{held_write_lock}", info.value)
    assert "another Kiln process holds the write lock" in error.message
    assert str(held_write_lock) in error.message
    assert "retry" in (error.hint or "") and "start the database server" not in str(error)


def test_threads_read_while_another_thread_writes(tmp_path: Path) -> None:
    """A read in one thread while a write unit of work is open in another answers at once."""
    store = _created(tmp_path / "kiln.db")
    inside, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store.unit_of_work() as uow:
            uow.pipelines.upsert("w", "a@b.c", "", "kiln.yaml")
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert inside.wait(30)
        started = time.monotonic()
        with store.read() as uow:
            assert uow.pipelines.list() == []  # the uncommitted write is not seen
        assert time.monotonic() - started < 5
    finally:
        release.set()
        thread.join()
        store.dispose()


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM pipelines").fetchone()[0])


def test_connections_made_while_the_file_is_away_never_commit_elsewhere(tmp_path: Path) -> None:
    """A store that may create (kiln run, kiln scheduler) must not create an empty file when a
    pooled connection is opened while the file is away, nor keep a connection to another file
    once the real one is back: every accepted commit is in the real file."""
    path, away = tmp_path / "kiln.db", tmp_path / "moved.db"
    store = _created(path)
    other = _created(tmp_path / "other.db")
    other.dispose()
    accepted = 0

    def write(name: str) -> None:
        nonlocal accepted
        try:
            with store.unit_of_work() as uow:
                uow.pipelines.upsert(name, "a@b.c", "", "kiln.yaml")
            accepted += 1
        except StoreError:
            pass

    try:
        write("before")
        path.rename(away)
        # Two connections at once: the pool opens a new one while the file is away.
        with store.engine.connect() as c1:
            with pytest.raises(sa_exc.OperationalError, match="unable to open"):
                store.engine.connect().close()
            c1.rollback()
        assert not path.exists(), "a connection created a new, empty database at the path"
        write("while away")
        (tmp_path / "other.db").rename(path)  # another database put in its place...
        with store.engine.connect() as c1, store.engine.connect() as c2:
            c1.rollback()
            c2.rollback()
        write("while replaced")
        path.rename(tmp_path / "other-again.db")  # ...then the real one back
        away.rename(path)
        for i in range(8):
            write(f"after {i}")
    finally:
        store.dispose()
    assert _count(path) == accepted
    assert accepted >= 8


def test_create_refuses_a_path_whose_wal_outlived_its_database(tmp_path: Path) -> None:
    path = tmp_path / "kiln.db"
    (tmp_path / "kiln.db-wal").write_bytes(b"live wal of a moved database")
    with pytest.raises(StoreError) as info:
        MetadataStore(f"sqlite:///{path}", create=True)
    assert "kiln.db-wal" in str(info.value) and not path.exists()
    assert (tmp_path / "kiln.db-wal").read_bytes() == b"live wal of a moved database"
