"""Package loading checks the environment lock for every loader (gates, `kiln predict`, the
server): a package whose lock disagrees with this process on the major.minor version of a
library is refused before any pickle is loaded, naming the library; a patch difference loads."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from kiln.errors import IntegrityError
from kiln.registry.package import (
    MANIFEST_FORMAT,
    environment_lock,
    load_package,
    save_manifest,
)
from kiln.stores import ContentStore, FsspecArtifactStore

LOCK_MESSAGE = "was built with other library versions than this environment has"


def package(content: ContentStore, **locked: str) -> str:
    """A package of two pickled objects whose lock is this process's, ``locked`` changed."""
    lock = environment_lock()
    lock["packages"] |= locked
    blob = pickle.dumps({"a model": [1, 2, 3]})
    ref = {"sha256": content.put(blob), "size": len(blob)}
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "models": {"JFK": ref},
        "fallback": ref,
        "environment": lock,
    }
    return save_manifest(content, manifest)


@pytest.fixture
def content(tmp_path: Path) -> ContentStore:
    return ContentStore(FsspecArtifactStore(str(tmp_path / "artifacts")))


def test_a_lock_with_another_minor_version_is_refused_naming_the_library(
    content: ContentStore,
) -> None:
    digest = package(content, lightgbm="1.0.0")
    with pytest.raises(IntegrityError) as e:
        load_package(content, digest, label="flights v7")
    message = str(e.value)
    assert f"flights v7 {LOCK_MESSAGE}" in message
    assert "lightgbm: package built with 1.0.0, this process has" in message
    assert "same major.minor" in (e.value.hint or "")


def test_a_library_of_the_lock_that_is_not_installed_is_refused(content: ContentStore) -> None:
    digest = package(content, **{"not-a-kiln-library": "2.1.0"})
    with pytest.raises(IntegrityError, match=r"not-a-kiln-library 2\.1\.0 is not installed"):
        load_package(content, digest, label="flights v7")


def test_a_lock_that_differs_only_in_patch_versions_loads(content: ContentStore) -> None:
    here = environment_lock()["packages"]["lightgbm"]
    patch = ".".join([*here.split(".")[:2], "999"])
    loaded = load_package(content, package(content, lightgbm=patch), label="flights v7")
    assert loaded.models["JFK"] == {"a model": [1, 2, 3]}
