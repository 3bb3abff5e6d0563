"""Kiln's stores: metadata in SQL (SQLite, PostgreSQL), artifacts on fsspec, content-addressed."""

from kiln.stores.artifacts import ArtifactStore, FsspecArtifactStore
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
    "ContentStore",
    "FsspecArtifactStore",
    "LockRecord",
    "MetadataStore",
    "PipelineRecord",
    "RunRecord",
    "StepRecord",
    "TaskRecord",
    "UnitOfWork",
    "VersionRecord",
]
