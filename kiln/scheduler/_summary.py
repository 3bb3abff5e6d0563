"""What a pass of ``kiln scheduler --once`` did and will do, per pipeline: the firings it ran,
the ones it skipped (catch-up), the ones waiting for a retry, and when each pipeline is due
next -- so that a pass that ran nothing says why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from kiln.scheduler._claims import Outcome
from kiln.scheduler._due import latest_due, next_due
from kiln.scheduler._folder import Pipeline

__all__ = ["PipelinePass", "pipeline_pass"]


@dataclass(frozen=True, slots=True)
class PipelinePass:
    pipeline: str
    timezone: str
    next_due: datetime
    """In UTC; :attr:`next_local` in the schedule's time zone."""
    ran: tuple[Outcome, ...]
    """Attempts that ran in this pass (succeeded, blocked, failed or retrying)."""
    skipped: tuple[datetime, ...]
    """Due times (UTC) that catch-up recorded as skipped in this pass."""
    retrying: tuple[Outcome, ...]
    """Firings that wait for a retry after this pass."""
    not_run: datetime | None = None
    """A cron time (UTC) that passed before this scheduler first saw the pipeline and that
    ``catchup: skip`` does not run (nor record): the reason a first pass runs nothing."""

    @property
    def next_local(self) -> datetime:
        return self.next_due.astimezone(ZoneInfo(self.timezone))


def pipeline_pass(
    pipeline: Pipeline,
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
    last_due: datetime | None,
    first_seen: datetime,
) -> PipelinePass | None:
    """The pass of one scheduled pipeline (None if it has no schedule); ``last_due`` is the
    due time of its latest firing in the database after the pass, ``first_seen`` when this
    scheduler first saw the pipeline."""
    schedule = pipeline.schedule
    if schedule is None:
        return None
    mine = [o for o in outcomes if o.pipeline == pipeline.name]
    ran = tuple(o for o in mine if o.status != "skipped")
    last_status: dict[datetime, Outcome] = {}
    for o in ran:
        last_status[o.due_at] = o  # the last attempt of each firing
    not_run = None
    latest = latest_due(schedule, now)
    unhandled = last_due is None or last_due < latest
    if schedule.catchup == "skip" and unhandled and latest <= first_seen:
        not_run = latest
    return PipelinePass(
        pipeline=pipeline.name,
        timezone=schedule.timezone,
        next_due=next_due(schedule, now),
        ran=ran,
        skipped=tuple(o.due_at for o in mine if o.status == "skipped"),
        retrying=tuple(o for o in last_status.values() if o.status == "retrying"),
        not_run=not_run,
    )
