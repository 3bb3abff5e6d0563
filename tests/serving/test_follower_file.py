"""The registry follower and its SQLite file (no server, empty registries: fast): a file moved
away makes the table not ready with the reason, logged once; another Kiln database put at the
path is reopened and followed; a file that is not a Kiln database keeps it not ready."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.serving._follower import RegistryFollower
from kiln.serving._metrics import Metrics
from kiln.settings import Settings
from kiln.stores import MetadataStore, open_stores


def _move_away(db: Path, to: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            Path(f"{db}{suffix}").rename(f"{to}{suffix}")


def test_the_follower_reopens_another_database_put_at_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    stores = open_stores(Settings(home=home), upgrade=True)
    other = MetadataStore(f"sqlite:///{tmp_path / 'other.db'}", create=True)
    other.upgrade()
    with other.unit_of_work() as uow:
        uow.pipelines.upsert("restored", "a@b.c", "", "kiln.yaml")
    other.dispose()
    try:
        follower = RegistryFollower(stores, Metrics(), interval=1.0, max_instances=10)
        assert follower.refresh().missing() == []
        db = home / "kiln.db"
        _move_away(db, tmp_path / "away.db")
        with caplog.at_level("ERROR", logger="kiln.serving"):
            follower.refresh()
            table = follower.refresh()
        assert table.missing() == [f"the metadata database {db} is missing (moved or deleted)"]
        assert len([r for r in caplog.records if "is missing" in r.getMessage()]) == 1

        db.write_bytes(b"not a database" * 100)
        table = follower.refresh()
        assert "cannot be used" in table.missing()[0]
        db.unlink()

        (tmp_path / "other.db").rename(db)
        with caplog.at_level("WARNING", logger="kiln.serving"):
            table = follower.refresh()
        assert table.missing() == []
        assert list(table.pipelines) == ["restored"]
        assert any("reopened the metadata database" in r.getMessage() for r in caplog.records)
    finally:
        stores.close()
