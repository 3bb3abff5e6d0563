"""One repository per record kind, all sharing the session of one unit of work."""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kiln.errors import NotFoundError, StoreError
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import (
    Repository,
    check_choice,
    chunks,
    field_names,
    no_pipeline,
    no_run,
    now,
    one_production_violated,
    second_production,
    to_record,
    upsert,
)
from kiln.stores.metadata.deployments import DeploymentRepository
from kiln.stores.metadata.locks import LockRepository
from kiln.stores.metadata.records import (
    AuditRecord,
    PipelineRecord,
    RunRecord,
    RunStatus,
    RunTrigger,
    Stage,
    VersionRecord,
)
from kiln.stores.metadata.steps import StepRepository, TaskRepository

__all__ = [
    "AuditRepository",
    "DeploymentRepository",
    "LockRepository",
    "PipelineRepository",
    "RunRepository",
    "StepRepository",
    "TaskRepository",
    "VersionRepository",
]

_REGISTER_ATTEMPTS = 8


class PipelineRepository(Repository):
    _table = t.table_of(t.Pipeline)

    def upsert(self, name: str, owner: str, description: str, config_path: str) -> PipelineRecord:
        stamp = now()
        changes = {"owner": owner, "description": description, "config_path": config_path}
        values = {"name": name, **changes, "created_at": stamp, "updated_at": stamp}
        row = upsert(self._session, self._table, values, ["name"], {**changes, "updated_at": stamp})
        return to_record(PipelineRecord, row)

    def get(self, name: str) -> PipelineRecord:
        row = self._session.execute(
            sa.select(self._table).where(self._table.c.name == name)
        ).first()
        if row is None:
            raise no_pipeline(name)
        return to_record(PipelineRecord, row)

    def lock(self, name: str) -> PipelineRecord:
        """Serialize changes of the pipeline's stages until this unit of work ends.

        On PostgreSQL a row lock (FOR NO KEY UPDATE, so that runs and registrations, whose
        foreign keys only take a key-share lock, are not held up); on SQLite every write
        transaction already holds the database's write lock from its first statement.
        """
        row = self._session.execute(
            sa.select(self._table).where(self._table.c.name == name).with_for_update(key_share=True)
        ).first()
        if row is None:
            raise no_pipeline(name)
        return to_record(PipelineRecord, row)

    def list(self) -> builtins.list[PipelineRecord]:
        rows = self._session.execute(sa.select(self._table).order_by(self._table.c.name))
        return [to_record(PipelineRecord, row) for row in rows]


class RunRepository(Repository):
    _updatable = frozenset(field_names(RunRecord)) - {"id"}

    def create(  # noqa: PLR0917 (the documented positional signature)
        self,
        pipeline: str,
        trigger: RunTrigger,
        config_text: str,
        config_digest: str,
        config_path: str,
        host: str,
        pid: int,
        code_revision: str | None = None,
        alert_id: int | None = None,
    ) -> RunRecord:
        check_choice("trigger", trigger, t.RUN_TRIGGERS)
        self._require_pipeline(pipeline)
        run = t.Run(
            id=uuid.uuid4().hex[:12],
            pipeline=pipeline,
            status="running",
            trigger=trigger,
            config_text=config_text,
            config_digest=config_digest,
            config_path=config_path,
            code_revision=code_revision,
            host=host,
            pid=pid,
            attempt=1,
            started_at=now(),
            alert_id=alert_id,
        )
        self._session.add(run)
        self._session.flush()
        return to_record(RunRecord, run)

    def _get(self, run_id: str) -> t.Run:
        run = self._session.get(t.Run, run_id)
        if run is None:
            raise no_run(run_id)
        return run

    def get(self, run_id: str) -> RunRecord:
        return to_record(RunRecord, self._get(run_id))

    def list(self, pipeline: str | None = None, limit: int = 50) -> builtins.list[RunRecord]:
        stmt = sa.select(t.Run).order_by(t.Run.started_at.desc(), t.Run.id.desc()).limit(limit)
        if pipeline is not None:
            stmt = stmt.where(t.Run.pipeline == pipeline)
        return [to_record(RunRecord, run) for run in self._session.scalars(stmt)]

    def update(self, run_id: str, **changes: Any) -> RunRecord:
        unknown = set(changes) - self._updatable
        if unknown:
            raise ValueError(f"cannot update run field(s) {', '.join(sorted(unknown))}")
        if "status" in changes:
            check_choice("status", changes["status"], t.RUN_STATUSES)
        if "trigger" in changes:
            check_choice("trigger", changes["trigger"], t.RUN_TRIGGERS)
        run = self._get(run_id)
        for name, value in changes.items():
            setattr(run, name, value)
        self._session.flush()
        return to_record(RunRecord, run)

    def mark_finished(
        self,
        run_id: str,
        status: RunStatus,
        error: str | None = None,
        model_version: int | None = None,
    ) -> RunRecord:
        return self.update(
            run_id, status=status, error=error, model_version=model_version, finished_at=now()
        )

    def in_period(
        self, since: datetime, until: datetime, pipelines: Collection[str] | None = None
    ) -> builtins.list[RunRecord]:
        """Runs that were alive at some moment of [since, until): started before ``until``
        and not finished before ``since`` (a running run counts), oldest first; of
        ``pipelines`` only when given (one query per 500 of them)."""
        stmt = (
            sa.select(t.Run)
            .where(
                t.Run.started_at < until,
                sa.or_(t.Run.finished_at.is_(None), t.Run.finished_at >= since),
            )
            .order_by(t.Run.started_at, t.Run.id)
        )
        if pipelines is None:
            return [to_record(RunRecord, run) for run in self._session.scalars(stmt)]
        found = [
            to_record(RunRecord, run)
            for names in chunks(sorted(pipelines))
            for run in self._session.scalars(stmt.where(t.Run.pipeline.in_(names)))
        ]
        return sorted(found, key=lambda r: (r.started_at, r.id))

    def latest(self, pipeline: str) -> RunRecord | None:
        runs = self.list(pipeline, limit=1)
        return runs[0] if runs else None


class VersionRepository(Repository):
    def register(  # noqa: PLR0917 (the documented positional signature)
        self,
        pipeline: str,
        run_id: str,
        manifest_digest: str,
        metrics: dict[str, Any],
        lineage: dict[str, Any],
        stage: Stage = "candidate",
    ) -> VersionRecord:
        """Register the run's package as version max+1 of the pipeline.

        Two registrations racing for the same number collide on unique(pipeline, version);
        the loser rolls back its savepoint and tries the next number.
        """
        check_choice("stage", stage, t.STAGES)
        self._require_pipeline(pipeline)
        self._require_run(run_id)
        for attempt in range(_REGISTER_ATTEMPTS):
            existing = self.for_run(run_id)
            if existing is not None:
                raise StoreError(
                    f"run {run_id!r} is already registered as version {existing.version}"
                    f" of pipeline {existing.pipeline!r}",
                    hint="`kiln models list` shows the versions",
                )
            stamp = now()
            try:
                with self._session.begin_nested():
                    latest = self._session.scalar(
                        sa.select(sa.func.max(t.ModelVersion.version)).where(
                            t.ModelVersion.pipeline == pipeline
                        )
                    )
                    version = t.ModelVersion(
                        pipeline=pipeline,
                        version=(latest or 0) + 1,
                        run_id=run_id,
                        stage=stage,
                        manifest_digest=manifest_digest,
                        created_at=stamp,
                        stage_changed_at=stamp,
                        metrics=metrics,
                        lineage=lineage,
                    )
                    self._session.add(version)
                    self._session.flush()
            except sa_exc.IntegrityError as e:
                if one_production_violated(e):
                    raise second_production(str(e.orig).strip().splitlines()[0]) from e
                time.sleep(0.005 * (attempt + 1))
                continue
            return to_record(VersionRecord, version)
        raise StoreError(
            f"could not allocate a version number for pipeline {pipeline!r}:"
            f" {_REGISTER_ATTEMPTS} concurrent registrations got there first",
            hint="register again",
        )

    def _get(self, pipeline: str, version: int) -> t.ModelVersion:
        found = self._session.scalar(
            sa.select(t.ModelVersion).where(
                t.ModelVersion.pipeline == pipeline, t.ModelVersion.version == version
            )
        )
        if found is None:
            raise NotFoundError(
                f"no version {version} of pipeline {pipeline!r}",
                hint="`kiln models list` shows the versions",
            )
        return found

    def get(self, pipeline: str, version: int) -> VersionRecord:
        return to_record(VersionRecord, self._get(pipeline, version))

    def list(self, pipeline: str | None = None) -> builtins.list[VersionRecord]:
        stmt = sa.select(t.ModelVersion).order_by(t.ModelVersion.pipeline, t.ModelVersion.version)
        if pipeline is not None:
            stmt = stmt.where(t.ModelVersion.pipeline == pipeline)
        return [to_record(VersionRecord, v) for v in self._session.scalars(stmt)]

    def by_stage(self, pipeline: str, stage: Stage) -> builtins.list[VersionRecord]:
        check_choice("stage", stage, t.STAGES)
        stmt = (
            sa.select(t.ModelVersion)
            .where(t.ModelVersion.pipeline == pipeline, t.ModelVersion.stage == stage)
            .order_by(t.ModelVersion.version)
        )
        return [to_record(VersionRecord, v) for v in self._session.scalars(stmt)]

    def set_stage(
        self, pipeline: str, version: int, stage: Stage, *, traffic_share: float | None = None
    ) -> VersionRecord:
        """Move the version to ``stage``; ``traffic_share`` is kept only for a canary."""
        check_choice("stage", stage, t.STAGES)
        if stage == "canary" and not (traffic_share is not None and 0 < traffic_share < 1):
            raise ValueError(f"a canary needs a traffic share in (0, 1), got {traffic_share!r}")
        found = self._get(pipeline, version)
        found.stage = stage
        found.traffic_share = traffic_share if stage == "canary" else None
        found.stage_changed_at = now()
        self._session.flush()
        return to_record(VersionRecord, found)

    def for_run(self, run_id: str) -> VersionRecord | None:
        found = self._session.scalar(
            sa.select(t.ModelVersion).where(t.ModelVersion.run_id == run_id)
        )
        return None if found is None else to_record(VersionRecord, found)


class AuditRepository(Repository):
    def record(  # noqa: PLR0917 (the documented positional signature)
        self,
        actor: str,
        action: str,
        pipeline: str,
        version: int | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        event = t.AuditEvent(
            at=now(),
            actor=actor,
            action=action,
            pipeline=pipeline,
            version=version,
            reason=reason,
            details=details or {},
        )
        self._session.add(event)
        self._session.flush()
        return to_record(AuditRecord, event)

    def list(self, pipeline: str | None = None, limit: int = 100) -> builtins.list[AuditRecord]:
        stmt = (
            sa.select(t.AuditEvent)
            .order_by(t.AuditEvent.at.desc(), t.AuditEvent.id.desc())
            .limit(limit)
        )
        if pipeline is not None:
            stmt = stmt.where(t.AuditEvent.pipeline == pipeline)
        return [to_record(AuditRecord, e) for e in self._session.scalars(stmt)]
