"""Moving task inputs and results between local processes: pickle protocol 5 + shared memory.

Through a pipe, a 50 MB numpy array costs a pickle copy, the pipe and an unpickle copy on
each side. Instead, objects are pickled with protocol 5 and their large buffers (a numpy
array's data, a DataFrame's blocks) are written out-of-band into one file in ``/dev/shm``;
only the small pickle goes through the pipe. The receiver maps the file, unlinks it at once
and rebuilds the object on the mapping without copying: the memory is freed when the last
array using it is. Space is reserved with ``posix_fallocate``, so a full ``/dev/shm`` (64 MB
in a default Docker container) falls back to an ordinary pickle instead of a SIGBUS.

Segment names carry the pid of the process that owns the executor, so segments orphaned
by a killed caller can be swept by the next executor (:func:`sweep_orphans`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import secrets
from dataclasses import dataclass
from typing import Any

SHM_DIR = "/dev/shm"
OUT_OF_BAND_MIN_BYTES = 1 << 20
"""Buffers smaller than this stay inside the pickle."""
_ALIGN = 64
_PREFIX = "kiln-"


@dataclass(frozen=True)
class Packed:
    """A protocol-5 pickle and the shared-memory file holding its large buffers, if any."""

    data: bytes
    segment: str | None = None
    offsets: tuple[int, ...] = ()
    sizes: tuple[int, ...] = ()

    def load(self) -> Any:
        """Rebuild the object; the receiver owns the segment and unlinks it."""
        if self.segment is None:
            return pickle.loads(self.data)
        fd = os.open(self.segment, os.O_RDWR)
        try:
            mapping = mmap.mmap(fd, self.offsets[-1] + self.sizes[-1])
        finally:
            os.close(fd)
            os.unlink(self.segment)
        view = memoryview(mapping)
        buffers = [view[o : o + n] for o, n in zip(self.offsets, self.sizes, strict=True)]
        return pickle.loads(self.data, buffers=buffers)


def pack(obj: Any, *, owner: int) -> Packed:
    """Pickle ``obj``, its large buffers into a new shared-memory file when there is room."""
    if not _shm_usable():
        return Packed(pickle.dumps(obj, protocol=5))
    large: list[memoryview] = []

    def take(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: keep it in the pickle
            return True
        if raw.nbytes < OUT_OF_BAND_MIN_BYTES:
            return True
        large.append(raw)
        return False

    data = pickle.dumps(obj, protocol=5, buffer_callback=take)
    if not large:
        return Packed(data)
    offsets, end = [], 0
    for raw in large:
        offsets.append(end)
        end += -(-raw.nbytes // _ALIGN) * _ALIGN
    path = os.path.join(SHM_DIR, f"{_PREFIX}{owner}-{secrets.token_hex(8)}")
    if not _write(path, large, offsets, end):
        return Packed(pickle.dumps(obj, protocol=5))
    return Packed(data, path, tuple(offsets), tuple(raw.nbytes for raw in large))


def discard(segment: str | None) -> None:
    """Unlink a segment whose receiver may never have run (its worker died); idempotent."""
    if segment is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment)


def sweep_orphans() -> None:
    """Unlink segments left behind by executor owners that no longer run."""
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(_PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(_PREFIX) :].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            discard(os.path.join(SHM_DIR, name))


class LazyPacked:
    """Packs ``obj`` only when pickled, that is when the pool sends it to a worker.

    A pool queues every task up front but sends only a few at a time, so the shared memory
    in use stays bounded by the tasks in flight, not the whole batch.
    """

    def __init__(self, obj: Any, *, owner: int) -> None:
        self.obj = obj
        self.owner = owner
        self.segment: str | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        packed = pack(self.obj, owner=self.owner)
        self.segment = packed.segment
        return (Packed, (packed.data, packed.segment, packed.offsets, packed.sizes))


def _shm_usable() -> bool:
    return hasattr(os, "posix_fallocate") and os.access(SHM_DIR, os.W_OK)


def _write(path: str, buffers: list[memoryview], offsets: list[int], size: int) -> bool:
    """Write ``buffers`` into a new file; False (and no file) when there is no room."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:
            os.unlink(path)
            return False
        with mmap.mmap(fd, size) as mapping:
            for raw, offset in zip(buffers, offsets, strict=True):
                mapping[offset : offset + raw.nbytes] = raw
    except BaseException:
        discard(path)
        raise
    finally:
        os.close(fd)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
