"""Backends of the metadata contract suite: every test taking ``db_url`` runs on each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.stores import MetadataStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file (in a folder that does not exist yet) or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'kiln.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[MetadataStore]:
    """A metadata store at the current schema."""
    metadata = MetadataStore(db_url)
    metadata.upgrade()
    yield metadata
    metadata.dispose()
