"""Content addressing over any ArtifactStore: objects named by SHA-256, re-checked on read."""

from __future__ import annotations

import hashlib
import re

from kiln.errors import IntegrityError, NotFoundError
from kiln.stores.artifacts import ArtifactStore

__all__ = ["ContentStore"]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_HINT = "the artifact was modified or corrupted; re-run the pipeline to rebuild this version"


class ContentStore:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @staticmethod
    def key_of(digest: str) -> str:
        if not _DIGEST.match(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return f"objects/{digest[:2]}/{digest}"

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        key = self.key_of(digest)
        if not self.store.exists(key):
            self.store.put(key, data)
        return digest

    def exists(self, digest: str) -> bool:
        return self.store.exists(self.key_of(digest))

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
