"""The artifact seam: bytes in, bytes out, under string keys. Hashing and layout live above it."""

from __future__ import annotations

import builtins
import contextlib
import os
import posixpath
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import fsspec
from fsspec.implementations.local import LocalFileSystem

from kiln.errors import NotFoundError, StoreError

__all__ = ["ArtifactStore", "FsspecArtifactStore", "ObjectInfo"]

_TMP_MARK = ".kiln-tmp-"


def process_umask() -> int:
    """The umask of this process, read without changing it where the system allows.

    Linux (4.7+) shows it in ``/proc/self/status``. Elsewhere the only way is to set it and set
    it back, which is process-wide: a file another thread creates in between gets mode 0o666,
    so call this once (a store does, when it is made), never per write.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the store says of one object without reading it: its size and when it was written
    (None where the backend does not say)."""

    key: str
    size: int
    modified: datetime | None


@runtime_checkable
class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> builtins.list[str]: ...

    def stat(self, prefix: str = "") -> builtins.list[ObjectInfo]: ...

    def delete(self, key: str) -> bool: ...

    def move(self, src: str, dst: str) -> bool: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid artifact key {key!r}: expected a relative path like 'a/b/c'")
    if any(p.startswith(_TMP_MARK) for p in parts):
        raise ValueError(f"invalid artifact key {key!r}: {_TMP_MARK!r} names are reserved")
    return key


class FsspecArtifactStore:
    """An artifact store on a local folder or any fsspec URL (``s3://bucket/prefix``, ``memory://x``).

    Local writes go to a temporary file in the target folder and are renamed into place, so a
    killed process leaves either the whole object or none of it (plus, at worst, a temporary
    file that ``list`` ignores). Files get mode ``0o666 & ~umask`` and folders ``0o777 & ~umask``
    (the umask of the process when the store was made), like any file the process creates,
    so other users of the group (a UI, a monitor, an Airflow worker) can read what umask 022
    or 002 lets them: the temporary file alone would be 0o600.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError, OSError) as e:
            raise StoreError(
                f"cannot open the artifact store at {url}: {e}",
                hint="set KILN_ARTIFACTS_URL to a folder or an fsspec URL (s3://bucket/prefix)",
            ) from e
        self._fs: fsspec.AbstractFileSystem = fs
        self._root = root.rstrip("/") if root not in ("/", "") else root
        self._local = isinstance(fs, LocalFileSystem)
        # remote stores (S3...) have their own permissions; the mode is for local writes
        self._file_mode = 0o666 & ~process_umask() if self._local else 0o600

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self.url!r})"

    def _path(self, key: str) -> str:
        _check_key(key)
        if not self._root:
            return key
        return f"{self._root.rstrip('/')}/{key}"

    def _fail(self, action: str, key: str, error: BaseException) -> StoreError:
        return StoreError(
            f"cannot {action} artifact {key!r} in the artifact store at {self.url}: {error}",
            hint="check that the artifact store is reachable and writable",
        )

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            if self._local:
                self._put_local(path, data)
            else:
                self._fs.pipe_file(path, bytes(data))
        except OSError as e:
            raise self._fail("write", key, e) from e

    def _put_local(self, path: str, data: bytes) -> None:
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_TMP_MARK}{name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                os.chmod(tmp, self._file_mode)  # mkstemp made it 0o600
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            data = self._fs.cat_file(path)
        except FileNotFoundError as e:
            raise NotFoundError(
                f"no artifact {key!r} in the artifact store at {self.url}",
                hint="check KILN_ARTIFACTS_URL points at the store this registry was built with",
            ) from e
        except (IsADirectoryError, NotADirectoryError) as e:
            raise NotFoundError(f"no artifact {key!r} in the artifact store at {self.url}") from e
        except OSError as e:
            raise self._fail("read", key, e) from e
        return bytes(data)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return bool(self._fs.isfile(path))
        except OSError as e:
            raise self._fail("look up", key, e) from e

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys starting with ``prefix`` (a plain string prefix, not only a folder), sorted."""
        return sorted(self._find(prefix, detail=False))

    def stat(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Size and write time of every object whose key starts with ``prefix``, sorted by key,
        from one listing (fsspec ``find(detail=True)``): no object is read."""
        found = self._find(prefix, detail=True)
        return [_info(key, found[key]) for key in sorted(found)]

    def delete(self, key: str) -> bool:
        """Remove one object; False when it was not there (another process removed it)."""
        path = self._path(key)
        try:
            self._fs.rm_file(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise self._fail("delete", key, e) from e
        return True

    def move(self, src: str, dst: str) -> bool:
        """Move one object to another key (replacing what is there), without reading it into
        this process (fsspec ``mv``: a rename on a local folder, a server-side copy and delete
        on S3); False when ``src`` was not there."""
        source, target = self._path(src), self._path(dst)
        try:
            if not self._fs.isfile(source):
                return False
            if self._local:
                os.makedirs(os.path.dirname(target), exist_ok=True)
            self._fs.mv(source, target)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise self._fail("move", f"{src}' to '{dst}", e) from e
        return True

    def _find(self, prefix: str, *, detail: bool) -> dict[str, Any]:
        folder = posixpath.dirname(prefix)
        base = f"{self._root}/{folder}" if folder else self._root
        base = base.rstrip("/") or "/"
        try:
            found = self._fs.find(base, detail=True) if self._fs.isdir(base) else {}
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise self._fail("list", prefix or "<all>", e) from e
        strip = self._root.rstrip("/") + "/" if self._root else ""
        keys: dict[str, Any] = {}
        for p, info in found.items():
            key = p[len(strip) :] if strip and p.startswith(strip) else p.lstrip("/")
            if key.startswith(prefix) and _TMP_MARK not in key:
                keys[key] = info if detail else None
        return keys


def _info(key: str, detail: dict[str, Any]) -> ObjectInfo:
    """fsspec's details differ by backend: local has ``mtime`` (epoch seconds), memory
    ``created``, S3 ``LastModified`` (a datetime)."""
    raw = detail.get("mtime", detail.get("LastModified", detail.get("created")))
    modified: datetime | None
    if isinstance(raw, datetime):
        modified = raw if raw.tzinfo else raw.replace(tzinfo=UTC)
    elif isinstance(raw, int | float):
        modified = datetime.fromtimestamp(float(raw), UTC)
    else:
        modified = None
    return ObjectInfo(key=key, size=int(detail.get("size") or 0), modified=modified)
