"""Registry suites: every test taking ``store`` (tests/conftest.py) runs on SQLite and PostgreSQL,
with one pipeline whose versions are registered straight into the metadata store (no training:
stage logic needs only a manifest digest)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kiln.stores import MetadataStore

PIPELINE = "flights-delay"


Register = Callable[..., list[int]]


@pytest.fixture
def register(store: MetadataStore) -> Register:
    """``register(count, pipeline=PIPELINE)``: new candidate versions; returns their numbers."""

    def register(count: int, pipeline: str = PIPELINE) -> list[int]:
        with store.unit_of_work() as uow:
            uow.pipelines.upsert(pipeline, "data-team", "arrival delays", "kiln.yaml")
            numbers = []
            for i in range(count):
                run = uow.runs.create(pipeline, "manual", "", "c" * 64, "kiln.yaml", "host", 1)
                version = uow.versions.register(pipeline, run.id, f"{i:064x}", {}, {})
                numbers.append(version.version)
        return numbers

    return register
