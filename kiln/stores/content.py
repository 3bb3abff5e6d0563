"""Content addressing over any ArtifactStore: objects named by SHA-256, re-checked on read.

A put re-checks an object that exists already and rewrites it when its bytes no longer match
their name, so re-running the pipeline repairs a corrupted or truncated object instead of
registering a new version on top of it (the hint of every IntegrityError says so, and it is true).
"""

from __future__ import annotations

import hashlib
import re

from kiln.errors import IntegrityError, NotFoundError
from kiln.stores.artifacts import ArtifactStore, ObjectInfo

__all__ = ["ContentStore"]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_HINT = (
    "the artifact was modified or corrupted; re-run the pipeline (`kiln run kiln.yaml`):"
    " the new version rewrites every object that does not match its SHA-256"
)


class ContentStore:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @staticmethod
    def key_of(digest: str) -> str:
        if not _DIGEST.match(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return f"objects/{digest[:2]}/{digest}"

    def put(self, data: bytes) -> str:
        """Store ``data`` under its SHA-256. An object that exists is read back and hashed; it is
        kept only if it matches, otherwise rewritten (the backends write atomically)."""
        digest = hashlib.sha256(data).hexdigest()
        if not self.intact(digest):
            self.store.put(self.key_of(digest), data)
        return digest

    def digest_of(self, key: str) -> str | None:
        """The digest an object key names (``objects/ab/ab...``), None for any other key."""
        folder, _, name = key.rpartition("/")
        if _DIGEST.match(name) and folder == f"objects/{name[:2]}":
            return name
        return None

    def stat(self) -> list[ObjectInfo]:
        """Size and write time of every content object (not read)."""
        return [i for i in self.store.stat("objects/") if self.digest_of(i.key) is not None]

    def delete(self, digest: str) -> bool:
        """Remove the object of ``digest``; False when it was not there."""
        return self.store.delete(self.key_of(digest))

    def exists(self, digest: str) -> bool:
        return self.store.exists(self.key_of(digest))

    def intact(self, digest: str) -> bool:
        """True if the object exists and its bytes still hash to ``digest``."""
        key = self.key_of(digest)
        try:
            data = self.store.get(key)
        except NotFoundError:
            return False
        return hashlib.sha256(data).hexdigest() == digest

    def get(self, digest: str, *, what: str) -> bytes:
        """The bytes of ``digest``, or IntegrityError; ``what`` names the object for the user."""
        key = self.key_of(digest)
        try:
            data = self.store.get(key)
        except NotFoundError as e:
            raise IntegrityError(
                f"{what}: artifact {key} is missing from the artifact store"
                f" (expected SHA-256 {digest})",
                hint=_HINT,
            ) from e
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(
                f"{what}: artifact {key} does not match its recorded SHA-256"
                f" (expected {digest}, actual {actual})",
                hint=_HINT,
            )
        return data
