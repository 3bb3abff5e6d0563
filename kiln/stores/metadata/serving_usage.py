"""Serving usage: what each server process used per interval, and per (pipeline, version,
segment, stage) within it. Written by the server (kiln.serving), read by serving cost."""

from __future__ import annotations

from kiln.stores.metadata.base import Repository

__all__ = ["ServingUsageRepository"]


class ServingUsageRepository(Repository):
    """Rows of ``server_intervals`` and ``serving_usage`` (see their tables)."""
