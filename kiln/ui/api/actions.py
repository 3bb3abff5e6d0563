"""The writes of the management API: a stage change, a run or a resume of a pipeline, and the
acknowledgement of an alert. Each answers ``{"changed", "message", ...}``; a viewer or the
owner of another pipeline gets 403, a page that lost a race 409."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi import Path as FastApiPath
from pydantic import BaseModel, Field

from kiln.ui import actions
from kiln.ui._deps import Writer, state

router = APIRouter(prefix="/api", tags=["actions"])

_BODY_TEXT = 100_000
"""Texts up to this are read (actions.MAX_REASON refuses them past 4,000 with a clear message)."""

Action = Literal["promote", "rollback", "override", "block", "shadow", "unshadow", "run", "resume"]


class ActionRequest(BaseModel):
    """What an action takes: ``version`` (promote, override, block, shadow, unshadow; for a
    rollback the production version the caller saw), ``reason`` (required for override and
    block), ``run_id`` (resume), ``expected_stage`` (refuse with 409 if the version is no longer
    in this stage)."""

    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    reason: str | None = Field(default=None, max_length=_BODY_TEXT)
    run_id: str | None = Field(default=None, max_length=200)
    expected_stage: str | None = Field(default=None, max_length=40)


class AckRequest(BaseModel):
    note: str | None = Field(default=None, max_length=_BODY_TEXT)


@router.post("/pipelines/{name}/{action}", response_model=actions.Outcome)
def pipeline_action(
    request: Request, name: str, action: Action, body: ActionRequest, who: Writer
) -> actions.Outcome:
    """Promote, roll back, override (reason required), block (reason required), shadow or
    unshadow a version, start a run, or resume one; audited with the caller's name."""
    ui = state(request)
    return actions.do(
        ui.stores, ui.settings, who.principal, name, action,
        version=body.version, reason=body.reason, run_id=body.run_id,
        expected_stage=body.expected_stage,
    )  # fmt: skip


@router.post("/alerts/{alert_id}/ack", response_model=actions.Outcome)
def ack_alert(
    request: Request,
    alert_id: Annotated[int, FastApiPath(ge=1, le=2**31 - 1)],
    body: AckRequest,
    who: Writer,
) -> actions.Outcome:
    """Acknowledge an alert (someone has seen it); audited with the caller's name and note."""
    return actions.ack(state(request).stores, who.principal, alert_id, body.note)
