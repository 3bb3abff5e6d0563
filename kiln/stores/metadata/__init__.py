"""The metadata store: SQLAlchemy tables, repositories and units of work (SQLite, PostgreSQL)."""

from kiln.stores.metadata.engine import make_engine
from kiln.stores.metadata.records import (
    AuditRecord,
    DeploymentRecord,
    FireRecord,
    GateRecord,
    LockRecord,
    PipelineRecord,
    RunRecord,
    StepRecord,
    TaskRecord,
    VersionRecord,
)
from kiln.stores.metadata.store import MetadataStore, UnitOfWork

__all__ = [
    "AuditRecord",
    "DeploymentRecord",
    "FireRecord",
    "GateRecord",
    "LockRecord",
    "MetadataStore",
    "PipelineRecord",
    "RunRecord",
    "StepRecord",
    "TaskRecord",
    "UnitOfWork",
    "VersionRecord",
    "make_engine",
]
