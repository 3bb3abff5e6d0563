"""Kiln's stores: metadata in SQL (SQLite, PostgreSQL), artifacts on fsspec, content-addressed."""

from kiln.stores.artifacts import ArtifactStore, FsspecArtifactStore
from kiln.stores.bundle import Stores, open_stores
from kiln.stores.capture import CaptureRecord, CaptureWriter, query_captures, read_captures
from kiln.stores.content import ContentStore
from kiln.stores.metadata import (
    AuditRecord,
    LockRecord,
    MetadataStore,
    PipelineRecord,
    RunRecord,
    StepRecord,
    TaskRecord,
    UnitOfWork,
    VersionRecord,
)

__all__ = [
    "ArtifactStore",
    "AuditRecord",
    "CaptureRecord",
    "CaptureWriter",
    "ContentStore",
    "FsspecArtifactStore",
    "LockRecord",
    "MetadataStore",
    "PipelineRecord",
    "RunRecord",
    "StepRecord",
    "Stores",
    "TaskRecord",
    "UnitOfWork",
    "VersionRecord",
    "open_stores",
    "query_captures",
    "read_captures",
]
