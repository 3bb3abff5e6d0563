"""The UI's actions over real stores: who may do what, the audit names the person, a forged or
stale form changes nothing, bad input is refused with a message (never a 500)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kiln.config import LoadedConfig
from kiln.registry.stages import Stages
from kiln.stores import Stores
from kiln.stores.metadata.base import now
from tests.ui._pipelines import OTHER, PIPELINE, register, stage_of
from tests.ui.conftest import sign_in

FLASH = "kiln_flash"


def _bearer(client: TestClient, user: str) -> dict[str, str]:
    _, token = client.app.state.kiln.people.create_token(user)  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {token}"}


def _audit(stores: Stores, pipeline: str = PIPELINE) -> list[tuple[str, str, str | None]]:
    with stores.metadata.read() as uow:
        return [(e.actor, e.action, e.reason) for e in uow.audit.list(pipeline)]


def _deployments(stores: Stores) -> list[tuple[str, int, str]]:
    with stores.metadata.read() as uow:
        return [(d.action, d.version, d.actor) for d in uow.deployments.list(PIPELINE)]


def test_the_owner_promotes_overrides_and_rolls_back_her_pipeline(
    client: TestClient, stores: Stores
) -> None:
    v1, v2, v3 = register(stores, 3)
    csrf = sign_in(client, "olga")
    r = client.post(
        f"/pipelines/{PIPELINE}/actions/promote",
        data={"csrf_token": csrf, "version": str(v1), "expected_stage": "candidate"},
    )
    assert r.status_code == 303 and r.headers["location"] == f"/pipelines/{PIPELINE}"
    assert "-> production" in r.cookies[FLASH] and r.cookies[FLASH].startswith('"ok:')
    assert stage_of(stores, v1) == "production"

    Stages(stores.metadata).block(PIPELINE, v2, actor="gates", reason="replay failed")
    r = client.post(
        f"/pipelines/{PIPELINE}/actions/override",
        data={"csrf_token": csrf, "version": str(v2), "reason": "the replay gate was wrong",
              "expected_stage": "blocked", "back": f"/pipelines/{PIPELINE}/versions/{v2}"},
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == f"/pipelines/{PIPELINE}/versions/{v2}"
    assert stage_of(stores, v2) == "production" and stage_of(stores, v1) == "archived"

    api = client.post(f"/api/pipelines/{PIPELINE}/rollback", json={"version": v2},
                      headers={"X-CSRF-Token": csrf})  # fmt: skip
    assert api.status_code == 200, api.text
    assert api.json()["changed"] is True and api.json()["version"] == v1
    assert stage_of(stores, v1) == "production"
    assert stage_of(stores, v3) == "candidate"

    assert _audit(stores)[:3] == [
        ("olga", "rollback", None),
        ("olga", "override", "the replay gate was wrong"),
        ("gates", "block", "replay failed"),
    ]
    assert _deployments(stores)[:3] == [
        ("rollback", v1, "olga"), ("promote", v2, "olga"), ("block", v2, "gates"),
    ]  # fmt: skip


def test_shadow_unshadow_and_block_through_the_api_with_a_token(
    client: TestClient, stores: Stores
) -> None:
    [v1] = register(stores, 1)
    olga = _bearer(client, "olga")
    url = f"/api/pipelines/{PIPELINE}"
    assert client.post(f"{url}/shadow", json={"version": v1}, headers=olga).json()["stage"] == (
        "shadow"
    )
    assert client.post(f"{url}/unshadow", json={"version": v1}, headers=olga).json()["stage"] == (
        "candidate"
    )
    blocked = client.post(f"{url}/block", json={"version": v1, "reason": "bad"}, headers=olga)
    assert blocked.status_code == 200 and stage_of(stores, v1) == "blocked"
    assert [a for _, a, _ in _audit(stores)][:3] == ["block", "unshadow", "shadow"]


def test_a_viewer_and_the_owner_of_another_pipeline_get_403(
    client: TestClient, stores: Stores
) -> None:
    [v1] = register(stores, 1)
    register(stores, 1, pipeline=OTHER, owner="someone")
    vic = client.post(f"/api/pipelines/{PIPELINE}/promote", json={"version": v1},
                      headers=_bearer(client, "vic"))  # fmt: skip
    assert vic.status_code == 403 and vic.json()["error"] == "forbidden"
    assert "viewer" in vic.json()["message"]
    other = client.post(f"/api/pipelines/{OTHER}/promote", json={"version": 1},
                        headers=_bearer(client, "olga"))  # fmt: skip
    assert other.status_code == 403 and OTHER in other.json()["message"]
    csrf = sign_in(client, "vic")
    page = client.post(f"/pipelines/{PIPELINE}/actions/promote",
                       data={"csrf_token": csrf, "version": str(v1)})  # fmt: skip
    assert page.status_code == 403 and "<html" in page.text and "viewer" in page.text
    assert stage_of(stores, v1) == "candidate"
    assert stage_of(stores, 1, OTHER) == "candidate"
    assert _audit(stores) == []


def test_the_admin_may_change_any_pipeline(client: TestClient, stores: Stores) -> None:
    register(stores, 1, pipeline=OTHER, owner="someone")
    r = client.post(f"/api/pipelines/{OTHER}/promote", json={"version": 1},
                    headers=_bearer(client, "ada"))  # fmt: skip
    assert r.status_code == 200 and stage_of(stores, 1, OTHER) == "production"
    assert _audit(stores, OTHER)[0][:2] == ("ada", "promote")


def test_override_and_block_without_a_reason_are_refused(
    client: TestClient, stores: Stores
) -> None:
    v1, v2 = register(stores, 2)
    Stages(stores.metadata).block(PIPELINE, v1, actor="gates", reason="replay failed")
    olga = _bearer(client, "olga")
    for action, version in (("override", v1), ("block", v2)):
        r = client.post(f"/api/pipelines/{PIPELINE}/{action}",
                        json={"version": version, "reason": "   "}, headers=olga)  # fmt: skip
        assert r.status_code == 409 and "needs a reason" in r.json()["message"], r.text
        assert r.json()["hint"]
    assert stage_of(stores, v1) == "blocked" and stage_of(stores, v2) == "candidate"
    csrf = sign_in(client, "olga")
    form = client.post(f"/pipelines/{PIPELINE}/actions/override",
                       data={"csrf_token": csrf, "version": str(v1)})  # fmt: skip
    assert form.status_code == 303 and form.cookies[FLASH].startswith('"error:')
    assert "needs a reason" in form.cookies[FLASH]
    assert stage_of(stores, v1) == "blocked"


def test_a_forged_form_without_or_with_a_wrong_csrf_token_is_refused(
    client: TestClient, stores: Stores
) -> None:
    [v1] = register(stores, 1)
    sign_in(client, "olga")
    for data in ({"version": str(v1)}, {"version": str(v1), "csrf_token": "forged"}):
        r = client.post(f"/pipelines/{PIPELINE}/actions/promote", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    api = client.post(f"/api/pipelines/{PIPELINE}/promote", json={"version": v1})
    assert api.status_code == 403 and api.json()["error"] == "csrf_failed"
    assert stage_of(stores, v1) == "candidate"


def test_a_stage_change_that_lost_a_race_is_409_and_changes_nothing(
    client: TestClient, stores: Stores
) -> None:
    v1, v2 = register(stores, 2)
    olga = _bearer(client, "olga")
    # the page showed v2 a candidate; meanwhile the gates blocked it
    Stages(stores.metadata).block(PIPELINE, v2, actor="gates", reason="replay failed")
    r = client.post(f"/api/pipelines/{PIPELINE}/promote",
                    json={"version": v2, "expected_stage": "candidate"}, headers=olga)  # fmt: skip
    assert r.status_code == 409
    said = f"the stage of {PIPELINE} v{v2} changed meanwhile (it is now blocked);"
    assert r.json()["message"] == said + " the page shows it now"
    # shown as a candidate, promoted meanwhile by someone else: the promote is a no-op race
    Stages(stores.metadata).promote(PIPELINE, v1, actor="ada")
    stale_page = {"version": v1, "expected_stage": "candidate"}
    again = client.post(f"/api/pipelines/{PIPELINE}/promote", json=stale_page, headers=olga)
    assert again.status_code == 409 and "it is now production" in again.json()["message"]
    # an override of a version someone else overrode first
    Stages(stores.metadata).override(PIPELINE, v2, actor="ada", reason="ok")
    csrf = sign_in(client, "olga")
    form = client.post(f"/pipelines/{PIPELINE}/actions/override",
                       data={"csrf_token": csrf, "version": str(v2), "reason": "mine",
                             "expected_stage": "blocked"})  # fmt: skip
    assert form.status_code == 303 and form.cookies[FLASH].startswith('"error:')
    assert "changed meanwhile" in form.cookies[FLASH]
    # a rollback from a production version that is no longer the production one
    stale = client.post(f"/api/pipelines/{PIPELINE}/rollback", json={"version": v1}, headers=olga)
    assert stale.status_code == 409 and "it is now archived" in stale.json()["message"]
    assert stage_of(stores, v2) == "production" and stage_of(stores, v1) == "archived"
    assert [a for a, _, _ in _audit(stores)].count("olga") == 0


def test_reasons_up_to_4000_chars_are_kept_longer_ones_refused(
    client: TestClient, stores: Stores
) -> None:
    v1, v2 = register(stores, 2)
    olga = _bearer(client, "olga")
    long = client.post(f"/api/pipelines/{PIPELINE}/block",
                       json={"version": v1, "reason": "x" * 5000}, headers=olga)  # fmt: skip
    assert long.status_code == 400 and "5,000 characters" in long.json()["message"]
    assert stage_of(stores, v1) == "candidate"
    ok = client.post(f"/api/pipelines/{PIPELINE}/block",
                     json={"version": v2, "reason": "y" * 4000}, headers=olga)  # fmt: skip
    assert ok.status_code == 200 and _audit(stores)[0][2] == "y" * 4000


def test_bad_form_input_flashes_an_error_never_a_500(client: TestClient, stores: Stores) -> None:
    register(stores, 1)
    csrf = sign_in(client, "olga")
    cases = [
        ("promote", {"version": "abc"}, "positive whole number"),
        ("promote", {}, "needs a version"),
        ("promote", {"version": "99"}, "99"),
        ("shadow", {"version": "1", "expected_stage": "nonsense"}, "not a stage"),
        ("resume", {}, "needs a run id"),
        ("resume", {"run_id": "nope"}, "nope"),
        ("run", {}, "/nowhere/kiln.yaml"),
        ("ack", {"alert_id": "7"}, "7"),
        ("explode", {}, "no action"),
    ]
    for action, data, said in cases:
        r = client.post(f"/pipelines/{PIPELINE}/actions/{action}",
                        data={"csrf_token": csrf, "back": "//evil.example/x", **data})  # fmt: skip
        assert r.status_code == 303, (action, r.text)
        assert r.headers["location"] == f"/pipelines/{PIPELINE}"  # never an open redirect
        assert r.cookies[FLASH].startswith('"error:') and said in r.cookies[FLASH], (action, r)
    unknown = client.post("/pipelines/nope/actions/promote",
                          data={"csrf_token": csrf, "version": "1"})  # fmt: skip
    assert unknown.status_code == 303 and "no pipeline 'nope'" in unknown.cookies[FLASH]
    api = client.post("/api/pipelines/nope/promote", json={"version": 1},
                      headers={"X-CSRF-Token": csrf})  # fmt: skip
    assert api.status_code == 404 and "nope" in api.json()["message"]


def test_a_run_is_refused_while_a_live_run_holds_the_lock(
    client: TestClient, stores: Stores
) -> None:
    register(stores, 1)
    with stores.metadata.unit_of_work() as uow:
        run = uow.runs.create(PIPELINE, "manual", "", "c" * 64, "kiln.yaml", "h", os.getpid())
        uow.locks.acquire(PIPELINE, run.id, socket.gethostname(), os.getpid(), timedelta(60))
    olga = _bearer(client, "olga")
    r = client.post(f"/api/pipelines/{PIPELINE}/run", json={}, headers=olga)
    assert r.status_code == 409 and run.id in r.json()["message"]
    resumed = client.post(f"/api/pipelines/{PIPELINE}/resume", json={"run_id": run.id},
                          headers=olga)  # fmt: skip
    assert resumed.status_code == 409 and "running" in resumed.json()["message"]
    assert [a for _, a, _ in _audit(stores)] == []


def test_resume_takes_only_a_failed_run_of_this_pipeline(
    client: TestClient, stores: Stores
) -> None:
    register(stores, 1)
    register(stores, 1, pipeline=OTHER, owner="olga")
    with stores.metadata.unit_of_work() as uow:
        theirs = uow.runs.list(OTHER, limit=1)[0]
        done = uow.runs.list(PIPELINE, limit=1)[0]
    olga = _bearer(client, "olga")
    wrong = client.post(f"/api/pipelines/{PIPELINE}/resume", json={"run_id": theirs.id},
                        headers=olga)  # fmt: skip
    assert wrong.status_code == 404 and OTHER in wrong.json()["message"]
    finished = client.post(f"/api/pipelines/{PIPELINE}/resume", json={"run_id": done.id},
                           headers=olga)  # fmt: skip
    assert finished.status_code == 409 and "succeeded" in finished.json()["message"]


def test_ack_an_alert_names_the_person(client: TestClient, stores: Stores) -> None:
    register(stores, 1)
    with stores.metadata.unit_of_work() as uow:
        episode = uow.alerts.start(
            PIPELINE, "drift:distance", "drift", "alert", now(), 0.4, 0.2, "distance drifted"
        )
    assert episode is not None
    vic = client.post(f"/api/alerts/{episode.id}/ack", json={"note": "x"},
                      headers=_bearer(client, "vic"))  # fmt: skip
    assert vic.status_code == 403
    r = client.post(f"/api/alerts/{episode.id}/ack", json={"note": "looking into it"},
                    headers=_bearer(client, "olga"))  # fmt: skip
    assert r.status_code == 200 and "acknowledged by olga" in r.json()["message"]
    assert _audit(stores)[0] == ("olga", "ack_alert", "looking into it")
    missing = client.post("/api/alerts/999/ack", json={}, headers=_bearer(client, "olga"))
    assert missing.status_code == 404


def test_start_a_run_spawns_kiln_run_and_audits_the_person(
    client: TestClient, stores: Stores, tmp_path: Path
) -> None:
    register(stores, 1)
    config = tmp_path / "kiln.yaml"
    config.write_text("name: [not, a, name]\n")  # the child `kiln run` refuses it at once
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert(PIPELINE, "olga", "arrival delays", str(config))
    r = client.post(f"/api/pipelines/{PIPELINE}/run", json={}, headers=_bearer(client, "olga"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["changed"] is True and body["run_id"] is None
    assert f"a run of {PIPELINE} is starting" in body["message"]
    with stores.metadata.read() as uow:
        [event] = uow.audit.list(PIPELINE, limit=1)
    assert (event.actor, event.action) == ("olga", "run.start")
    log = Path(event.details["log"])
    deadline = time.monotonic() + 60
    while "hint:" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"error: {config}" in log.read_text()  # the child's own refusal, in its log


@pytest.mark.slow
def test_a_run_started_from_the_ui_registers_a_version(
    client: TestClient, stores: Stores, make_config: Callable[..., LoadedConfig]
) -> None:
    loaded = make_config(owner="olga")
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert(loaded.config.name, "olga", "", str(loaded.path))
    r = client.post(f"/api/pipelines/{loaded.config.name}/run", json={},
                    headers=_bearer(client, "olga"))  # fmt: skip
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with stores.metadata.read() as uow:
            runs = uow.runs.list(loaded.config.name, limit=1)
        if runs and runs[0].status != "running":
            break
        time.sleep(1)
    assert runs and runs[0].status == "succeeded" and runs[0].trigger == "manual"
    assert r.json()["run_id"] in (None, runs[0].id)
    with stores.metadata.read() as uow:
        version = uow.versions.for_run(runs[0].id)
        events = uow.audit.list(loaded.config.name)
    assert version is not None
    assert ("olga", "register", version.version) in [(e.actor, e.action, e.version) for e in events]
    assert ("olga", "run.start") in [(e.actor, e.action) for e in events]


def test_the_ack_form_acknowledges_and_comes_back_with_a_flash(
    client: TestClient, stores: Stores
) -> None:
    register(stores, 1)
    with stores.metadata.unit_of_work() as uow:
        episode = uow.alerts.start(
            PIPELINE, "latency:p99", "latency", "warn", now(), 900.0, 500.0, "p99 is slow"
        )
    assert episode is not None
    csrf = sign_in(client, "olga")
    back = f"/pipelines/{PIPELINE}/monitoring"
    r = client.post(f"/pipelines/{PIPELINE}/actions/ack",
                    data={"csrf_token": csrf, "alert_id": str(episode.id), "note": "on it",
                          "back": back})  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == back
    assert "acknowledged by olga" in r.cookies[FLASH]
    with stores.metadata.read() as uow:
        acked = uow.alerts.get(episode.id)
    assert (acked.acked_by, acked.ack_note) == ("olga", "on it")
