"""The deployment history: an append-only log of which version served each pipeline."""

from __future__ import annotations

import builtins

import sqlalchemy as sa

from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import Repository, check_choice, now, to_record
from kiln.stores.metadata.records import DeploymentAction, DeploymentRecord

__all__ = ["DeploymentRepository"]


class DeploymentRepository(Repository):
    """Rows are only ever added: the log is the evidence of what served when, and rollback
    reads it to find the version to go back to."""

    def record(
        self,
        pipeline: str,
        version: int,
        action: DeploymentAction,
        *,
        actor: str,
        from_version: int | None = None,
        reason: str | None = None,
    ) -> DeploymentRecord:
        check_choice("action", action, t.DEPLOYMENT_ACTIONS)
        event = t.Deployment(
            pipeline=pipeline,
            version=version,
            action=action,
            from_version=from_version,
            actor=actor,
            reason=reason,
            at=now(),
        )
        self._session.add(event)
        self._session.flush()
        return to_record(DeploymentRecord, event)

    def list(self, pipeline: str, limit: int | None = 100) -> builtins.list[DeploymentRecord]:
        """The pipeline's deployments, newest first; ``limit=None`` returns all of them."""
        stmt = (
            sa.select(t.Deployment)
            .where(t.Deployment.pipeline == pipeline)
            .order_by(t.Deployment.id.desc())
            .limit(limit)
        )
        return [to_record(DeploymentRecord, d) for d in self._session.scalars(stmt)]
