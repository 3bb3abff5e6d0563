"""Artifacts and captures honour the process umask (a UI, monitor or Airflow worker running as
another user of the group must be able to read them): files 0o666 & ~umask, folders
0o777 & ~umask, whatever the temporary file they were written through."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiln.stores import CaptureRecord, CaptureWriter, ContentStore, FsspecArtifactStore
from kiln.stores.artifacts import process_umask

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")

CASES = [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def folders_below(root: Path, path: Path) -> list[Path]:
    return [p for p in path.parents if p != root and root in p.parents]


@pytest.mark.parametrize(("mask", "file_mode", "folder_mode"), CASES, ids=oct)
def test_artifacts_honour_the_umask(
    tmp_path: Path, mask: int, file_mode: int, folder_mode: int
) -> None:
    root = tmp_path / "artifacts"
    with umask(mask):
        store = FsspecArtifactStore(str(root))
        store.put("models/a/model.bin", b"model")
        digest = ContentStore(store).put(b"content-addressed")
    written = [root / "models/a/model.bin", root / ContentStore.key_of(digest)]
    for path in written:
        assert oct(mode(path)) == oct(file_mode), path
        for folder in [root, *folders_below(root, path)]:
            assert oct(mode(folder)) == oct(folder_mode), folder


@pytest.mark.parametrize(("mask", "file_mode", "folder_mode"), CASES, ids=oct)
def test_captures_honour_the_umask(
    tmp_path: Path, mask: int, file_mode: int, folder_mode: int
) -> None:
    root = tmp_path / "captures"
    capture = CaptureRecord(
        request_id="r-1", ts=datetime(2024, 3, 1, tzinfo=UTC), pipeline="flights", version=1,
        stage="production", segment=None, model="fallback:global", fallback=True,
        features={"distance": 1}, prediction=0.5, error=None, latency_ms=1.0,
    )  # fmt: skip
    with umask(mask):
        writer = CaptureWriter(str(root), writer_id="modes")
        writer.start()
        assert writer.offer(capture)
        writer.close()
    [path] = [p for p in root.rglob("*.parquet")]
    assert oct(mode(path)) == oct(file_mode)
    for folder in [root, *folders_below(root, path)]:
        assert oct(mode(folder)) == oct(folder_mode), folder


def test_the_umask_is_read_when_the_store_is_made_not_at_each_write(tmp_path: Path) -> None:
    """The umask is process-global: reading it means changing it (outside Linux), which
    must not happen while other threads create files, so a store reads it once."""
    with umask(0o022):
        store = FsspecArtifactStore(str(tmp_path))
    with umask(0o077):
        store.put("k", b"x")
    assert oct(mode(tmp_path / "k")) == oct(0o644)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o027])
def test_process_umask_reads_the_umask_and_leaves_it_as_it_was(mask: int) -> None:
    with umask(mask):
        assert oct(process_umask()) == oct(mask)
        assert oct(os.umask(mask)) == oct(mask)  # unchanged by the read
