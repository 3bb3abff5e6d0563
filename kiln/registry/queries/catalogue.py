"""The catalogue: one row per pipeline with what serves it, its latest version and gates, its
monitoring state, open alerts and last run; filtered, searched and paged in the database.

Bounded work at any size: the filters, the count and the page are SQL over the pipelines with
correlated subqueries that seek one index entry each (the latest released version, the latest
monitor window, the last run); then one batch query per kind over the page's pipelines (at
most ``per_page``), never one per pipeline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kiln.errors import KilnError
from kiln.registry.liveness import shown_status
from kiln.stores import MetadataStore
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import to_record
from kiln.stores.metadata.engine import READONLY, unreachable
from kiln.stores.metadata.records import LockRecord, RunRecord

__all__ = [
    "MAX_PER_PAGE",
    "MONITOR_STATES",
    "CatalogueFilter",
    "CataloguePage",
    "CatalogueRow",
    "GateOutcome",
    "LastRun",
    "MonitorState",
    "catalogue",
    "monitor_state",
    "released_version",
]

MAX_PER_PAGE = 200
MONITOR_STATES = ("ok", "warn", "alert", "no traffic", "not monitored yet")
"""The monitoring state of a pipeline: its latest monitor window's (or none yet)."""

_mv = t.table_of(t.ModelVersion)
_p = t.table_of(t.Pipeline)
_w = t.table_of(t.MonitorWindow)
_r = t.table_of(t.Run)


MAX_PAGE = 1_000_000
"""Pages past it are refused (a page number is an SQL offset: a database integer)."""


class FilterError(KilnError):
    """A catalogue filter or page that is not one of the values it takes (answered 400)."""

    code = "bad_filter"


@dataclass(frozen=True)
class CatalogueFilter:
    q: str | None = None
    """Words searched (case-insensitive, as a substring) in name, owner and description."""
    owner: str | None = None
    stage: str | None = None
    """The latest released version's stage."""
    state: str | None = None
    """A monitoring state of :data:`MONITOR_STATES`."""
    page: int = 1
    per_page: int = 50

    def __post_init__(self) -> None:
        if self.stage is not None and self.stage not in t.STAGES:
            raise FilterError(
                f"unknown stage {self.stage!r} in the catalogue filter",
                hint=f"stage is one of {', '.join(t.STAGES)}",
            )
        if self.state is not None and self.state not in MONITOR_STATES:
            raise FilterError(
                f"unknown monitoring state {self.state!r} in the catalogue filter",
                hint=f"state is one of {', '.join(MONITOR_STATES)}",
            )
        if not 1 <= self.page <= MAX_PAGE:
            raise FilterError(
                f"page {str(self.page)[:30]} does not exist",
                hint=f"pages start at 1 (and stop before {MAX_PAGE:,})",
            )
        if not 1 <= self.per_page <= MAX_PER_PAGE:
            raise FilterError(
                f"per_page {self.per_page} is out of range",
                hint=f"per_page is between 1 and {MAX_PER_PAGE}",
            )


@dataclass(frozen=True)
class GateOutcome:
    """``passed``, ``failed``, ``pending`` or ``none`` (no gate ran), and each gate's status."""

    outcome: str
    gates: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MonitorState:
    """The latest monitor window's state and its worst finding (when it has one)."""

    state: str
    window_start: datetime | None = None
    window_end: datetime | None = None
    check: str | None = None
    feature: str | None = None
    segment: str | None = None
    value: float | None = None
    threshold: float | None = None
    statistic: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """What `kiln status --json` printed before this type existed."""
        if self.window_start is None or self.window_end is None:
            return {"state": self.state}
        found: dict[str, Any] = {
            "state": self.state,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
        }
        if self.check is not None:
            found |= {
                "check": self.check, "feature": self.feature, "segment": self.segment,
                "value": self.value, "threshold": self.threshold, "statistic": self.statistic,
            }  # fmt: skip
        return found


@dataclass(frozen=True)
class LastRun:
    id: str
    status: str
    """As shown: ``interrupted`` for a ``running`` run whose process is dead."""
    trigger: str
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class CatalogueRow:
    pipeline: str
    owner: str
    description: str
    production: int | None
    production_since: datetime | None
    latest: int | None
    """The latest released version (experiments never serve and are left out)."""
    latest_stage: str | None
    latest_created_at: datetime | None
    gates: GateOutcome
    monitoring: MonitorState
    open_alerts: int
    last_run: LastRun | None
    monthly_usd: float | None = None
    """Left None by the query: cost is a higher layer's (kiln.monitoring.cost); the UI and
    the CLI set it with ``dataclasses.replace``."""


@dataclass(frozen=True)
class CataloguePage:
    rows: list[CatalogueRow]
    total: int
    page: int
    per_page: int
    owners: list[str]
    """Every owner in the registry (the owner filter's choices)."""

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.page * self.per_page < self.total

    @property
    def after(self) -> int:
        """How many rows come after this page."""
        return max(0, self.total - self.page * self.per_page)


def released_version(pipeline: Any) -> sa.ScalarSelect[Any]:
    """The latest version of ``pipeline`` (a column) that is no experiment: an index seek."""
    return (
        sa.select(_mv.c.version)
        .where(_mv.c.pipeline == pipeline, _not_experiment())
        .order_by(_mv.c.version.desc())
        .limit(1)
        .scalar_subquery()
    )


def _not_experiment() -> sa.ColumnElement[bool]:
    return _mv.c.lineage["experiment"].as_string().is_(None)


def catalogue(
    metadata: MetadataStore, flt: CatalogueFilter | None = None, now: datetime | None = None
) -> CataloguePage:
    """One page of the catalogue, ordered by pipeline name, with the total that matches."""
    flt = flt or CatalogueFilter()
    now = now or datetime.now(UTC)
    engine = metadata.engine.execution_options(**{READONLY: True})
    try:
        with engine.connect() as conn, conn.begin():
            return _catalogue(conn, flt, now)
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        raise unreachable(metadata.url, e) from e


def _catalogue(conn: sa.Connection, flt: CatalogueFilter, now: datetime) -> CataloguePage:
    latest_window = (
        sa.select(_w.c.id)
        .where(_w.c.pipeline == _p.c.name)
        .order_by(_w.c.window_start.desc(), _w.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    last_run = (
        sa.select(_r.c.id)
        .where(_r.c.pipeline == _p.c.name)
        .order_by(_r.c.started_at.desc(), _r.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    base = sa.select(
        _p.c.name, _p.c.owner, _p.c.description,
        released_version(_p.c.name).label("latest"),
        latest_window.label("window_id"), last_run.label("run_id"),
    )  # fmt: skip
    if flt.q:
        needle = flt.q.strip().lower()
        base = base.where(
            sa.or_(
                *(sa.func.lower(c).contains(needle, autoescape=True)
                  for c in (_p.c.name, _p.c.owner, _p.c.description))
            )
        )  # fmt: skip
    if flt.owner:
        base = base.where(_p.c.owner == flt.owner)
    offset = (flt.page - 1) * flt.per_page
    if not (flt.stage or flt.state):
        # No filter on the latest version or window: count and page the pipelines alone, and
        # seek the latest version, window and run for the page's names only (PostgreSQL would
        # otherwise run the correlated subqueries for every pipeline before the LIMIT).
        matching = base.with_only_columns(_p.c.name)
        total = conn.scalar(sa.select(sa.func.count()).select_from(matching.subquery())) or 0
        shown = matching.order_by(_p.c.name).limit(flt.per_page).offset(offset).subquery("shown")
        base = base.where(_p.c.name.in_(sa.select(shown.c.name)))
        offset = 0
    else:
        total = None  # counted over the joined query below
    b = base.subquery("b")
    mv = _mv.alias("lv")
    w = _w.alias("lw")
    query = sa.select(b)
    if flt.stage:  # joined only to filter: the page's rows read them in one batch below
        query = query.join(mv, sa.and_(mv.c.pipeline == b.c.name, mv.c.version == b.c.latest))
    if flt.state and flt.state != "not monitored yet":
        query = query.join(w, w.c.id == b.c.window_id)
    if flt.stage:
        query = query.where(mv.c.stage == flt.stage)
    if flt.state == "not monitored yet":
        query = query.where(b.c.window_id.is_(None))
    elif flt.state:
        query = query.where(w.c.state == flt.state.replace(" ", "_"))
    if total is None:
        total = conn.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    page = conn.execute(query.order_by(b.c.name).limit(flt.per_page).offset(offset)).all()
    owners = list(conn.scalars(sa.select(_p.c.owner).distinct().order_by(_p.c.owner)))
    rows = _rows(conn, page, now)
    return CataloguePage(rows, total, flt.page, flt.per_page, owners)


def _rows(conn: sa.Connection, page: Sequence[sa.Row[Any]], now: datetime) -> list[CatalogueRow]:
    names = [r.name for r in page]
    if not names:
        return []
    production = {
        r.pipeline: r
        for r in conn.execute(
            sa.select(_mv.c.pipeline, _mv.c.version, _mv.c.stage_changed_at).where(
                _mv.c.pipeline.in_(names), _mv.c.stage == "production"
            )
        )
    }
    latest = [(r.name, r.latest) for r in page if r.latest is not None]
    stages = _latest(conn, latest)
    gates = _gates(conn, latest)
    windows = _windows(conn, [r.window_id for r in page if r.window_id is not None])
    alerts = _open_alerts(conn, names)
    runs = _runs(conn, names, [r.run_id for r in page if r.run_id is not None], now)
    found = []
    for r in page:
        prod = production.get(r.name)
        found.append(
            CatalogueRow(
                pipeline=r.name,
                owner=r.owner,
                description=r.description,
                production=prod.version if prod else None,
                production_since=prod.stage_changed_at if prod else None,
                latest=r.latest,
                latest_stage=stages[r.name][0] if r.name in stages else None,
                latest_created_at=stages[r.name][1] if r.name in stages else None,
                gates=gates.get(r.name, GateOutcome("none")),
                monitoring=windows.get(r.window_id) or MonitorState("not monitored yet"),
                open_alerts=alerts.get(r.name, 0),
                last_run=runs.get(r.run_id),
            )
        )
    return found


def _latest(
    conn: sa.Connection, versions: list[tuple[str, int]]
) -> dict[str, tuple[str, datetime]]:
    """The stage and creation time of each pipeline's latest released version."""
    if not versions:
        return {}
    wanted = sa.or_(*(sa.and_(_mv.c.pipeline == p, _mv.c.version == v) for p, v in versions))
    rows = conn.execute(sa.select(_mv.c.pipeline, _mv.c.stage, _mv.c.created_at).where(wanted))
    return {r.pipeline: (r.stage, r.created_at) for r in rows}


def _gates(conn: sa.Connection, versions: list[tuple[str, int]]) -> dict[str, GateOutcome]:
    """Each version's deciding results (the latest ``run``/``watch`` result per gate, or the
    latest re-check when no decision ran: as ``GateRepository.for_version``)."""
    if not versions:
        return {}
    g = t.table_of(t.GateResult)
    wanted = sa.or_(*(sa.and_(g.c.pipeline == p, g.c.version == v) for p, v in versions))
    results = conn.execute(
        sa.select(g.c.id, g.c.pipeline, g.c.gate, g.c.status, g.c.trigger)
        .where(wanted)
        .order_by(g.c.id)
    ).all()
    by_pipeline: dict[str, list[Any]] = defaultdict(list)
    for row in results:
        by_pipeline[row.pipeline].append(row)
    found = {}
    for pipeline, rows in by_pipeline.items():
        decided = [row for row in rows if row.trigger != "recheck"] or rows
        last: dict[str, str] = {}
        for row in decided:
            last[row.gate] = row.status
        found[pipeline] = GateOutcome(outcome_of(last), last)
    return found


def outcome_of(gates: dict[str, str]) -> str:
    statuses = set(gates.values())
    if not statuses:
        return "none"
    if "failed" in statuses:
        return "failed"
    if "pending" in statuses:
        return "pending"
    return "passed"


def _windows(conn: sa.Connection, ids: list[int]) -> dict[int, MonitorState]:
    if not ids:
        return {}
    rows = conn.execute(
        sa.select(_w.c.id, _w.c.window_start, _w.c.window_end, _w.c.state, _w.c.worst,
                  _w.c.summary).where(_w.c.id.in_(ids))
    )  # fmt: skip
    return {r.id: monitor_state(r.state, r.window_start, r.window_end, r.worst, r.summary)
            for r in rows}  # fmt: skip


def monitor_state(
    state: str,
    window_start: datetime,
    window_end: datetime,
    worst: str | None,
    summary: dict[str, Any] | None,
) -> MonitorState:
    """A stored window's state (``no_traffic`` shown as ``no traffic``) and worst finding."""
    shown = "no traffic" if state == "no_traffic" else state
    finding = next(
        (f for f in (summary or {}).get("findings", []) if f.get("check") == worst), None
    )
    if finding is None:
        return MonitorState(shown, window_start, window_end)
    return MonitorState(
        shown, window_start, window_end,
        check=finding.get("check"), feature=finding.get("feature"),
        segment=finding.get("segment"), value=finding.get("value"),
        threshold=finding.get("threshold"),
        statistic=(finding.get("details") or {}).get("statistic"),
    )  # fmt: skip


def _open_alerts(conn: sa.Connection, names: list[str]) -> dict[str, int]:
    a = t.table_of(t.Alert)
    rows = conn.execute(
        sa.select(a.c.pipeline, sa.func.count())
        .where(a.c.pipeline.in_(names), a.c.status == "open")
        .group_by(a.c.pipeline)
    )
    return {r[0]: int(r[1]) for r in rows}


def _runs(
    conn: sa.Connection, names: list[str], ids: list[str], now: datetime
) -> dict[str, LastRun]:
    if not ids:
        return {}
    locks_t = t.table_of(t.PipelineLock)
    locks = {
        r.pipeline: to_record(LockRecord, r)
        for r in conn.execute(sa.select(locks_t).where(locks_t.c.pipeline.in_(names)))
    }
    found = {}
    for row in conn.execute(sa.select(_r).where(_r.c.id.in_(ids))):
        run = to_record(RunRecord, row)
        found[run.id] = LastRun(
            run.id,
            shown_status(run, locks.get(run.pipeline), now=now),
            run.trigger,
            run.started_at,
            run.finished_at,
        )
    return found
