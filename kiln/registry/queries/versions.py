"""A page of registered versions (`kiln models list`, the pipeline page's version list): newest
first within each pipeline, filtered by pipeline and stage, paged in SQL, with only the
headline fields (the primary metric, the segment count, the experiment), never the whole
metrics and lineage JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kiln.registry.queries.catalogue import MAX_PAGE, MAX_PER_PAGE, FilterError
from kiln.stores import MetadataStore
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.engine import READONLY, unreachable

__all__ = ["VersionRow", "VersionsPage", "versions_page"]


@dataclass(frozen=True)
class VersionRow:
    pipeline: str
    version: int
    stage: str
    created_at: datetime
    stage_changed_at: datetime
    run_id: str
    traffic_share: float | None
    experiment: str | None
    segments: int | None
    primary: str | None
    """The name of the primary metric; ``primary_value`` its overall value."""
    primary_value: float | None


@dataclass(frozen=True)
class VersionsPage:
    rows: list[VersionRow]
    total: int
    page: int
    per_page: int

    @property
    def after(self) -> int:
        """How many versions come after this page."""
        return max(0, self.total - self.page * self.per_page)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def versions_page(
    metadata: MetadataStore,
    pipeline: str | None = None,
    stage: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> VersionsPage:
    """Versions of ``pipeline`` (all pipelines: None) at ``stage`` (any: None), ordered by
    pipeline and newest version first; one page of ``per_page`` with the total."""
    if stage is not None and stage not in t.STAGES:
        raise FilterError(f"unknown stage {stage!r}", hint=f"stage is one of {', '.join(t.STAGES)}")
    if not 1 <= page <= MAX_PAGE:
        raise FilterError(f"page {str(page)[:30]} does not exist", hint="pages start at 1")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise FilterError(
            f"the page size {per_page} is out of range",
            hint=f"a page holds between 1 and {MAX_PER_PAGE} versions",
        )
    mv = t.table_of(t.ModelVersion)
    where: list[sa.ColumnElement[bool]] = []
    if pipeline is not None:
        where.append(mv.c.pipeline == pipeline)
    if stage is not None:
        where.append(mv.c.stage == stage)
    query = (
        sa.select(
            mv.c.pipeline,
            mv.c.version,
            mv.c.stage,
            mv.c.created_at,
            mv.c.stage_changed_at,
            mv.c.run_id,
            mv.c.traffic_share,
            mv.c.lineage["experiment"].as_string().label("experiment"),
            mv.c.metrics["segments"].as_integer().label("segments"),
            mv.c.metrics["primary"].as_string().label("primary"),
            mv.c.metrics["overall"].label("overall"),
        )
        .where(*where)
        .order_by(mv.c.pipeline, mv.c.version.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    engine = metadata.engine.execution_options(**{READONLY: True})
    try:
        with engine.connect() as conn, conn.begin():
            total = conn.scalar(sa.select(sa.func.count()).select_from(mv).where(*where)) or 0
            rows = [_row(r) for r in conn.execute(query)]
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise unreachable(metadata.url, e) from e
    return VersionsPage(rows, total, page, per_page)


def _row(r: Any) -> VersionRow:
    overall = r.overall if isinstance(r.overall, dict) else {}
    value = overall.get(r.primary) if r.primary else None
    return VersionRow(
        pipeline=r.pipeline, version=r.version, stage=r.stage, created_at=r.created_at,
        stage_changed_at=r.stage_changed_at, run_id=r.run_id, traffic_share=r.traffic_share,
        experiment=r.experiment or None, segments=r.segments, primary=r.primary,
        primary_value=float(value) if isinstance(value, int | float) else None,
    )  # fmt: skip
