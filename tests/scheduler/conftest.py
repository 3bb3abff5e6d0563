"""A folder of pipelines over the nycflights13 warehouse, and the real `kiln scheduler`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.config import LoadedConfig
from kiln.stores import MetadataStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pipelines(tmp_path: Path) -> Path:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    return folder


@pytest.fixture
def add_pipeline(make_config: Callable[..., LoadedConfig], pipelines: Path) -> Callable[..., Path]:
    """Write the small flights pipeline named ``name`` to ``pipelines/<where>`` (changes merged
    as in make_config); the file appears at once (written aside, then renamed)."""

    def add(where: str, name: str, **changes: Any) -> Path:
        data = yaml.safe_load(make_config("base.yaml", **changes).text)
        data["name"] = name
        target = pipelines / where
        target.parent.mkdir(parents=True, exist_ok=True)
        aside = target.with_name(target.name + ".part")
        aside.write_text(yaml.safe_dump(data, sort_keys=False))
        aside.replace(target)
        return target

    return add


@pytest.fixture
def kiln_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a `kiln` child: the test's database, home and artifacts."""
    return {
        **os.environ,
        "KILN_DB_URL": db_url,
        "KILN_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def metadata(db_url: str) -> Iterator[MetadataStore]:
    """The test's database at the current schema (a team's schedulers share a migrated one)."""
    store = MetadataStore(db_url, create=True)
    store.upgrade()
    yield store
    store.dispose()
