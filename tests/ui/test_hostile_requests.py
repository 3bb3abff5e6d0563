"""Hostile query strings, path parameters and bodies on every endpoint: answered 4xx with a
message, never a 500 (huge integers, negative pages, unknown stages, overlong names)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from kiln.stores import Stores

BIG = "99999999999999999999"
H = {"Authorization": "Bearer boot-admin-token"}


@pytest.fixture
def run_id(stores: Stores) -> str:
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert("p", "olga", "d", "kiln.yaml")
        run = uow.runs.create("p", "manual", "", "c" * 64, "kiln.yaml", "host", 1)
        uow.versions.register("p", run.id, "0" * 64, {}, {})
    return run.id


@pytest.mark.parametrize(
    "path",
    [
        f"/?page={BIG}", f"/?per_page={BIG}", "/?page=-1", "/?stage=%00", "/?state=nope",
        f"/api/pipelines?page={BIG}", f"/pipelines/p/versions/{BIG}", "/pipelines/p/versions/-1",
        f"/api/pipelines/p/versions/{BIG}", "/runs/" + "x" * 5000, "/runs/RUN?limit=" + BIG,
        "/api/runs/RUN?offset=" + BIG, "/api/runs/RUN/logs?segment=" + "x" * 3000,
        f"/cost?page={BIG}", f"/cost?since={BIG}d", "/cost?since=-5d", "/pipelines/p/cost?since=x",
        f"/api/pipelines/p/audit?limit={BIG}", f"/api/pipelines/p/versions?page={BIG}",
        "/api/pipelines/p/versions?stage=zzz", "/pipelines/" + "y" * 300, "/pipelines/%2e%2e",
        "/api/pipelines/nope/versions", "/pipelines/nope/monitoring", "/api/pipelines/nope/cost",
    ],
)  # fmt: skip
def test_hostile_reads_are_4xx_with_a_message(client: TestClient, run_id: str, path: str) -> None:
    client.cookies.clear()
    r = client.get(path.replace("RUN", run_id), headers=H)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
    assert "Traceback" not in r.text
    if path.startswith("/api/"):
        assert r.json()["message"]


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/pipelines/p/promote", {"version": int(BIG)}),
        ("/api/pipelines/p/promote", {"version": 1e20}),
        ("/api/pipelines/p/promote", {"version": "abc"}),
        ("/api/pipelines/p/override", {"version": 1, "reason": "x" * 5000}),
        ("/api/pipelines/p/override", {"version": 1, "reason": "   "}),
        (f"/api/alerts/{BIG}/ack", {}),
        ("/api/pipelines/p/no-such-action", {}),
    ],
)
def test_hostile_writes_are_4xx_and_change_nothing(
    client: TestClient, run_id: str, stores: Stores, url: str, body: dict[str, object]
) -> None:
    r = client.post(url, json=body, headers=H)
    assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:300])
    assert r.json()["message"]
    with stores.metadata.read() as uow:
        assert uow.versions.get("p", 1).stage == "candidate"
        assert uow.audit.list("p") == []
