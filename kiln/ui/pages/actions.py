"""The action forms of the pages: ``POST /pipelines/{name}/actions/{action}`` does the action
and answers 303 to the page it came from, which shows what happened once (a flash). A refused
action (bad input, a lost race, a run already going) flashes its message and hint as an error;
a principal who may not change the pipeline gets the 403 page."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from kiln.errors import AuthError, KilnError
from kiln.ui import actions
from kiln.ui._deps import Writer, state
from kiln.ui._render import redirect_with_flash, safe_path

router = APIRouter(include_in_schema=False)

_Text = Annotated[str | None, Form()]


MAX_ID = 2**31 - 1
"""The largest version or alert id (a database integer); a larger one is refused, not a 500."""


def _number(value: str | None, field: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        number = int(value.strip())
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_ID:
        raise actions.ActionInputError(
            f"{field} must be a positive whole number, got {value[:40]!r}",
            hint="reload the page and use its buttons",
        )
    return number


def _message(error: KilnError) -> str:
    return error.message + (f" ({error.hint})" if error.hint else "")


@router.post("/pipelines/{name}/actions/{action}")
def pipeline_action(
    request: Request,
    name: str,
    action: str,
    who: Writer,
    *,
    version: _Text = None,
    reason: _Text = None,
    run_id: _Text = None,
    alert_id: _Text = None,
    note: _Text = None,
    expected_stage: _Text = None,
    back: _Text = None,
) -> Response:
    ui = state(request)
    home = f"/pipelines/{quote(name, safe='')}"
    target = safe_path(back, home)
    try:
        if action == "ack":
            number = _number(alert_id, "alert_id")
            if number is None:
                raise actions.ActionInputError(
                    "ack needs an alert_id", hint="use the alert's button on the page"
                )
            outcome = actions.ack(ui.stores, who.principal, number, note)
        else:
            outcome = actions.do(
                ui.stores, ui.settings, who.principal, name, action,
                version=_number(version, "version"), reason=reason, run_id=run_id,
                expected_stage=expected_stage,
            )  # fmt: skip
    except AuthError:
        raise  # 403 page (401: the login page)
    except KilnError as e:
        return redirect_with_flash(target, _message(e), kind="error")
    return redirect_with_flash(target, outcome.message, kind="ok")
