"""The local executor's transport: protocol-5 pickles with large buffers in /dev/shm."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kiln.executors import _transport
from kiln.executors._transport import discard, pack, sweep_orphans


def test_large_arrays_travel_out_of_band_and_come_back_writable() -> None:
    if not _transport._shm_usable():
        pytest.skip("no writable /dev/shm here")
    big = np.arange(2**20, dtype=np.float64)  # 8 MiB
    small = np.arange(10)
    packed = pack({"big": big, "small": small}, owner=os.getpid())
    assert packed.segment is not None and os.path.exists(packed.segment)
    assert len(packed.data) < 4096
    loaded = packed.load()
    assert not os.path.exists(packed.segment)  # the receiver unlinks it at once
    np.testing.assert_array_equal(loaded["big"], big)
    np.testing.assert_array_equal(loaded["small"], small)
    assert loaded["big"].flags.writeable and loaded["big"].flags.aligned
    loaded["big"][0] = -1.0
    assert big[0] == 0.0


def test_without_room_in_shared_memory_it_falls_back_to_a_plain_pickle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_transport, "_write", lambda *args: False)
    big = np.ones(2**20)
    packed = pack(big, owner=os.getpid())
    assert packed.segment is None and len(packed.data) > big.nbytes
    np.testing.assert_array_equal(packed.load(), big)


def test_orphans_of_dead_owners_are_swept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_transport, "SHM_DIR", str(tmp_path))
    dead, alive = tmp_path / "kiln-999999999-aa", tmp_path / f"kiln-{os.getpid()}-bb"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    sweep_orphans()
    assert not dead.exists() and alive.exists()
    discard(str(alive))
    discard(str(alive))  # idempotent
    assert not alive.exists()
