"""Serving fixtures: two real versions of a small flights pipeline, trained once per session
into a template home (each test that changes stages serves its own copy), and real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from serving_support import Server, Trained, config, read_rows

from kiln.config import load_config
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import open_stores


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, warehouse: Path) -> Trained:
    base = tmp_path_factory.mktemp("serving")
    home = base / "home"
    settings = Settings(home=home)
    stores = open_stores(settings, upgrade=True)
    try:
        runner = Runner(settings, stores)
        for i, (trees, rate) in enumerate(((20, 0.5), (30, 1.0)), start=1):
            path = base / f"kiln.v{i}.yaml"
            path.write_text(yaml.safe_dump(config(warehouse, trees=trees, sample_rate=rate)))
            assert runner.run(load_config(path)).version == i
    finally:
        stores.close()
    return Trained(home)


@pytest.fixture(scope="session")
def flight_rows(warehouse: Path) -> list[dict[str, Any]]:
    """Real rows of March 2013 (after the training months), as JSON-ready dicts."""
    return read_rows(warehouse)


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(home, **options)`` starts a server (not waiting); all are stopped at the end."""
    started: list[Server] = []

    def start(home: Path, **options: Any) -> Server:
        server = Server(home, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
