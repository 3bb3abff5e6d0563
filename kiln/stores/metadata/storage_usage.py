"""Measured storage: bytes and objects one pipeline keeps per kind of store, over time."""

from __future__ import annotations

from kiln.stores.metadata.base import Repository

__all__ = ["StorageUsageRepository"]


class StorageUsageRepository(Repository):
    """Rows of ``storage_usage`` (see its table)."""
