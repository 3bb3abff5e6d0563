"""The artifact seam and content addressing, on a local folder and on fsspec memory://."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from kiln.errors import IntegrityError, NotFoundError, StoreError
from kiln.stores import ArtifactStore, ContentStore, FsspecArtifactStore

WHAT = "segment 'JFK' of flights v3"


@pytest.fixture(params=["local", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path / "artifacts")
        return
    root = f"/kiln-test-{uuid.uuid4().hex}"
    yield f"memory://{root}"
    memory = fsspec.filesystem("memory")
    if memory.exists(root):
        memory.rm(root, recursive=True)


@pytest.fixture
def artifacts(url: str) -> FsspecArtifactStore:
    return FsspecArtifactStore(url)


def tamper(artifacts: FsspecArtifactStore, key: str, data: bytes) -> None:
    """Overwrite an object behind the store's back, as a corrupted disk or a person would."""
    with fsspec.open(f"{artifacts.url.rstrip('/')}/{key}", "wb") as f:
        f.write(data)


def test_store_satisfies_the_protocol(artifacts: FsspecArtifactStore) -> None:
    assert isinstance(artifacts, ArtifactStore)


def test_roundtrip_exists_list(artifacts: FsspecArtifactStore) -> None:
    assert artifacts.list() == []
    assert not artifacts.exists("runs/r1/log.txt")
    artifacts.put("runs/r1/log.txt", b"hello")
    artifacts.put("runs/r1/model.bin", bytes(range(256)) * 100)
    artifacts.put("runs/r2/log.txt", b"")
    artifacts.put("top", b"t")
    assert artifacts.get("runs/r1/log.txt") == b"hello"
    assert artifacts.get("runs/r1/model.bin") == bytes(range(256)) * 100
    assert artifacts.get("runs/r2/log.txt") == b""
    assert artifacts.exists("runs/r1/log.txt")
    assert not artifacts.exists("runs/r1")  # a folder is not an object
    assert artifacts.list() == ["runs/r1/log.txt", "runs/r1/model.bin", "runs/r2/log.txt", "top"]
    assert artifacts.list("runs/r1/") == ["runs/r1/log.txt", "runs/r1/model.bin"]
    assert artifacts.list("runs/r") == ["runs/r1/log.txt", "runs/r1/model.bin", "runs/r2/log.txt"]
    assert artifacts.list("runs/r1/m") == ["runs/r1/model.bin"]
    assert artifacts.list("nothing/here") == []
    artifacts.put("runs/r1/log.txt", b"replaced")
    assert artifacts.get("runs/r1/log.txt") == b"replaced"


def test_memory_root_lists_relative_keys() -> None:
    artifacts = FsspecArtifactStore("memory://")
    top = f"kiln-test-{uuid.uuid4().hex}"
    key = f"{top}/a/b"
    try:
        artifacts.put(key, b"x")
        assert artifacts.list(top) == [key]
        assert artifacts.get(key) == b"x"
    finally:
        fsspec.filesystem("memory").rm(f"/{top}", recursive=True)


def test_missing_key_is_not_found(artifacts: FsspecArtifactStore, url: str) -> None:
    with pytest.raises(NotFoundError, match="no artifact 'runs/none'") as info:
        artifacts.get("runs/none")
    assert url in str(info.value)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/"])
def test_invalid_keys_are_refused(artifacts: FsspecArtifactStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact key"):
        artifacts.put(key, b"x")


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    artifacts = FsspecArtifactStore(str(root))
    for i in range(20):
        artifacts.put(f"objects/{i % 3}/{i}", os.urandom(1000))
    on_disk = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert on_disk == artifacts.list()
    assert len(on_disk) == 20


def test_list_ignores_the_temporary_file_of_a_killed_writer(tmp_path: Path) -> None:
    artifacts = FsspecArtifactStore(str(tmp_path))
    artifacts.put("objects/aa/done", b"ok")
    (tmp_path / "objects" / "aa" / ".kiln-tmp-half.x1y2").write_bytes(b"partial")
    assert artifacts.list() == ["objects/aa/done"]


def write_forever(root: str, ready: Any) -> None:
    artifacts = FsspecArtifactStore(root)
    payload = b"x" * 8_000_000
    artifacts.put("big", payload)
    ready.set()
    while True:
        artifacts.put("big", payload)


def test_killed_writer_never_leaves_a_partial_object(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    writer = ctx.Process(target=write_forever, args=(str(tmp_path), ready))
    writer.start()
    try:
        assert ready.wait(30)
        writer.kill()
        writer.join(10)
    finally:
        if writer.is_alive():
            writer.kill()
    artifacts = FsspecArtifactStore(str(tmp_path))
    assert artifacts.get("big") == b"x" * 8_000_000
    assert artifacts.list() == ["big"]


def test_io_failure_names_the_url_and_key(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    artifacts = FsspecArtifactStore(str(blocker))
    with pytest.raises(StoreError) as info:
        artifacts.put("objects/ab/cd", b"data")
    assert str(blocker) in str(info.value) and "'objects/ab/cd'" in str(info.value)


def test_failed_local_write_cleans_up(tmp_path: Path) -> None:
    artifacts = FsspecArtifactStore(str(tmp_path))
    (tmp_path / "taken").mkdir()
    with pytest.raises(StoreError, match="cannot write artifact 'taken'"):
        artifacts.put("taken", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


# -- content addressing -----------------------------------------------------------------------


def test_content_roundtrip_and_layout(artifacts: FsspecArtifactStore) -> None:
    content = ContentStore(artifacts)
    data = b"segment model bytes"
    digest = content.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert content.key_of(digest) == f"objects/{digest[:2]}/{digest}"
    assert artifacts.list() == [content.key_of(digest)]
    assert content.exists(digest)
    assert not content.exists("0" * 64)
    assert content.get(digest, what=WHAT) == data
    assert content.put(data) == digest
    assert artifacts.list() == [content.key_of(digest)]


def test_content_put_repairs_an_object_that_no_longer_matches(
    artifacts: FsspecArtifactStore,
) -> None:
    content = ContentStore(artifacts)
    digest = content.put(b"model")
    tamper(artifacts, content.key_of(digest), b"tampered")
    assert content.exists(digest) and not content.intact(digest)
    assert content.put(b"model") == digest  # rewritten: the advice "re-run the pipeline" works
    assert content.intact(digest)
    assert content.get(digest, what=WHAT) == b"model"
    assert artifacts.list() == [content.key_of(digest)]


def test_tampered_object_raises_integrity_error(artifacts: FsspecArtifactStore) -> None:
    content = ContentStore(artifacts)
    digest = content.put(b"the real model")
    tamper(artifacts, content.key_of(digest), b"the fake model")
    with pytest.raises(IntegrityError) as info:
        content.get(digest, what=WHAT)
    message = str(info.value)
    assert WHAT in message
    assert f"expected {digest}" in message
    assert f"actual {hashlib.sha256(b'the fake model').hexdigest()}" in message
    assert "re-run the pipeline (`kiln run kiln.yaml`)" in message


def test_missing_object_raises_integrity_error(artifacts: FsspecArtifactStore) -> None:
    content = ContentStore(artifacts)
    digest = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(IntegrityError, match="missing") as info:
        content.get(digest, what=WHAT)
    assert WHAT in str(info.value) and digest in str(info.value)


@pytest.mark.parametrize("digest", ["", "abc", "G" * 64, "A" * 64, "../" + "a" * 61])
def test_malformed_digest_is_refused(artifacts: FsspecArtifactStore, digest: str) -> None:
    with pytest.raises(ValueError, match="not a SHA-256"):
        ContentStore(artifacts).get(digest, what=WHAT)


# -- sizes and deletion (kiln gc, storage cost) ---------------------------------------------


def test_stat_gives_sizes_and_write_times_without_reading(artifacts: FsspecArtifactStore) -> None:
    from datetime import UTC, datetime, timedelta

    assert artifacts.stat() == []
    before = datetime.now(UTC) - timedelta(seconds=5)
    artifacts.put("runs/r1/log.txt", b"hello")
    artifacts.put("runs/r1/model.bin", b"x" * 1000)
    artifacts.put("other", b"")
    infos = artifacts.stat("runs/")
    assert [(i.key, i.size) for i in infos] == [("runs/r1/log.txt", 5), ("runs/r1/model.bin", 1000)]
    after = datetime.now(UTC) + timedelta(seconds=5)
    assert all(i.modified is not None and before <= i.modified <= after for i in infos)
    assert [i.key for i in artifacts.stat()] == artifacts.list()


def test_stat_ignores_the_temporary_file_of_a_killed_writer(tmp_path: Path) -> None:
    store = FsspecArtifactStore(str(tmp_path))
    store.put("a/b", b"12")
    (tmp_path / "a" / ".kiln-tmp-b.xyz").write_bytes(b"partial")
    assert [(i.key, i.size) for i in store.stat()] == [("a/b", 2)]


def test_delete_removes_one_object_and_says_when_it_was_gone(
    artifacts: FsspecArtifactStore,
) -> None:
    artifacts.put("a/one", b"1")
    artifacts.put("a/two", b"2")
    assert artifacts.delete("a/one") is True
    assert artifacts.list() == ["a/two"]
    assert artifacts.delete("a/one") is False
    with pytest.raises(NotFoundError):
        artifacts.get("a/one")
    with pytest.raises(ValueError, match="invalid artifact key"):
        artifacts.delete("../escape")


def test_move_renames_one_object_replacing_the_target_and_says_when_it_was_gone(
    artifacts: FsspecArtifactStore,
) -> None:
    data = bytes(range(256)) * 64
    artifacts.put("objects/ab/one", data)
    artifacts.put("elsewhere/two", b"the old bytes of two")
    before = {i.key: i.modified for i in artifacts.stat()}
    assert artifacts.move("objects/ab/one", "quarantine/pass-1/one") is True
    assert artifacts.list() == ["elsewhere/two", "quarantine/pass-1/one"]
    assert artifacts.get("quarantine/pass-1/one") == data
    assert artifacts.move("objects/ab/one", "quarantine/pass-1/one") is False  # gone already
    assert artifacts.move("quarantine/pass-1/one", "elsewhere/two") is True  # replaces it
    assert artifacts.list() == ["elsewhere/two"]
    assert artifacts.get("elsewhere/two") == data
    if artifacts.url.startswith("/"):  # a local rename keeps the write time
        assert artifacts.stat()[0].modified == before["objects/ab/one"]
    with pytest.raises(ValueError, match="invalid artifact key"):
        artifacts.move("elsewhere/two", "../escape")


def test_content_stat_and_delete_follow_its_layout(artifacts: FsspecArtifactStore) -> None:
    content = ContentStore(artifacts)
    small, big = content.put(b"small"), content.put(b"b" * 4096)
    artifacts.put("captures/pipeline=p/date=2026-01-01/x.parquet", b"not content")
    assert {(content.digest_of(i.key), i.size) for i in content.stat()} == {
        (small, 5),
        (big, 4096),
    }
    assert content.digest_of("captures/pipeline=p/date=2026-01-01/x.parquet") is None
    assert content.digest_of(f"objects/zz/{small}") is None  # not its folder
    assert content.delete(small) is True
    assert not content.exists(small) and content.exists(big)
    assert content.delete(small) is False
    with pytest.raises(IntegrityError, match="missing"):
        content.get(small, what=WHAT)
    assert content.put(b"small") == small  # a put after a delete writes it again
    assert content.get(small, what=WHAT) == b"small"
