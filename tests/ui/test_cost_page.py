"""`/cost`, `/pipelines/{name}/cost` and their API show `kiln cost --json --no-measure`'s figures
for the same period: serving intervals and storage measurements recorded through Kiln's own
repositories (as the server and `kiln cost` record them), and a real flights run (slow)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kiln.config.loader import LoadedConfig
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import Stores
from kiln.stores.metadata.serving_usage import ServerIntervalRecord, ServingUsageRecord
from tests.monitoring.test_report import HOSTILE
from tests.ui.conftest import sign_in

P = "flights-delay"


def serve(stores: Stores, pipeline: str, at: datetime, rows: dict[tuple[int, str], int]) -> None:
    """One minute of one server process that answered ``rows`` per (version, segment)."""
    start = at - timedelta(minutes=1)
    server = f"host:1:{int(start.timestamp() * 1000)}"
    usage = [
        ServingUsageRecord(server, start, at, pipeline, version, segment, "production",
                           requests=n, rows=n, cpu_seconds=n * 0.002, shared_cpu_seconds=0.5)
        for (version, segment), n in rows.items()
    ]  # fmt: skip
    interval = ServerIntervalRecord(server, start, at, cpu_seconds=30.0, rss_bytes=2**30,
                                    reserved_cpus=1.0, requests=sum(rows.values()),
                                    pipelines=[pipeline])  # fmt: skip
    with stores.metadata.unit_of_work() as uow:
        uow.serving_usage.record(interval, usage)


@pytest.fixture
def billed(stores: Stores) -> datetime:
    """Two pipelines: flights-delay served by v1 then v2 (one segment named with markup) over
    two periods and its storage measured; a second one with storage only."""
    now = datetime.now(UTC).replace(microsecond=0)
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert(P, "olga", "flights", "kiln.yaml")
        uow.pipelines.upsert("taxi", "ada", "<b>taxi</b>", "kiln.yaml")
    serve(stores, P, now - timedelta(days=40), {(1, "EWR"): 300})  # the previous period
    serve(stores, P, now - timedelta(days=10), {(1, "EWR"): 800, (1, "JFK"): 200})
    serve(stores, P, now - timedelta(days=2), {(2, "EWR"): 500, (2, HOSTILE): 100})
    with stores.metadata.unit_of_work() as uow:
        uow.storage_usage.record(P, "packages", now - timedelta(days=20), 3 * 10**9, 12)
        uow.storage_usage.record("taxi", "captures", now - timedelta(days=5), 10**9, 4)
    return now


def cli_cost(settings: Settings, cli: Callable[..., Any], *args: str) -> dict[str, Any]:
    env = {"KILN_HOME": str(settings.home)}
    done = cli("cost", "--json", "--no-measure", *args, cwd=settings.home.parent, env=env)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


STABLE = ("per_month", "previous_period", "top_segments", "predictions",
          "usd_per_1000_predictions")  # fmt: skip
"""Figures that do not move with `now` (storage's $/month is the newest measurement's rate)."""


def close(ours: Any, theirs: Any, rel: float, tiny: float = 0.0) -> bool:
    """Equal, floats to ``rel`` or ``tiny`` dollars."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(
            close(ours[k], theirs[k], rel, tiny) for k in ours
        )
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(
            close(a, b, rel, tiny) for a, b in zip(ours, theirs, strict=True)
        )
    if isinstance(ours, float) and isinstance(theirs, float | int):
        return ours == pytest.approx(theirs, rel=rel, abs=tiny)
    return bool(ours == theirs)


def same_figures(ours: dict[str, Any], theirs: dict[str, Any], rel: float = 1e-9) -> None:
    """The page's figures are `kiln cost`'s. ``rel``: a period given as a date is as long as
    from it to each report's `now`, so its $/month differ by the seconds between the reports.
    What storage has cost so far in the period grows with `now` too (the newest measurement's
    span runs until the report is made): spent storage, the totals holding it and the trend
    are equal to a millionth of a dollar."""
    assert ours["pipeline"] == theirs["pipeline"]
    for key in STABLE:
        assert close(ours[key], theirs[key], rel), (ours["pipeline"], key, ours[key], theirs[key])
    for kind in ("training", "serving"):
        assert close(ours["spent"][kind], theirs["spent"][kind], rel), (ours["pipeline"], kind)
    assert close(ours["spent"], theirs["spent"], 1e-3, tiny=1e-6), ours["pipeline"]
    assert close(ours["trend"], theirs["trend"], 1e-3, tiny=1e-6), ours["pipeline"]
    assert [r["key"] for r in ours["rows"]] == [r["key"] for r in theirs["rows"]]
    for mine, cli_row in zip(ours["rows"], theirs["rows"], strict=True):
        for kind in ("training", "serving"):
            assert close(mine[kind], cli_row[kind], rel), (mine["key"], kind)
        assert close(mine, cli_row, 1e-3, tiny=1e-6), mine["key"]


def test_every_pipelines_figures_are_kiln_costs(
    client: TestClient, billed: datetime, settings: Settings, cli: Callable[..., Any]
) -> None:
    theirs = cli_cost(settings, cli, "--since", "30d")
    sign_in(client, "vic")
    ours = client.get("/api/cost?since=30d").json()
    assert (
        [p["pipeline"] for p in ours["pipelines"]]
        == [P, "taxi"]
        == [p["pipeline"] for p in theirs["pipelines"]]
    )
    for mine, cli_doc in zip(ours["pipelines"], theirs["pipelines"], strict=True):
        same_figures(mine, cli_doc)
    flights = ours["pipelines"][0]
    assert flights["predictions"] == 1600 and flights["trend"] is not None

    page = client.get("/cost?since=30d")
    assert page.status_code == 200
    rows = re.findall(r'<tr data-pipeline="([^"]+)">(.*?)</tr>', page.text, re.S)
    assert [name for name, _ in rows] == [P, "taxi"]
    total = theirs["pipelines"][0]["per_month"]["total"]["usd"]
    assert f"${total:,.2f}" in rows[0][1] or f"{total:.2g}" in rows[0][1]
    assert f'href="/pipelines/{P}/cost?since=30d"' in rows[0][1]

    paged = client.get("/api/cost?since=30d&per_page=1&page=2").json()
    assert [p["pipeline"] for p in paged["pipelines"]] == ["taxi"] and paged["total"] == 2
    html = client.get("/cost?since=30d&per_page=1").text
    assert 'rel="next"' in html and "page 1 of 2" in html


def test_one_pipeline_per_segment_and_version_is_kiln_cost_by_segment(
    client: TestClient, billed: datetime, settings: Settings, cli: Callable[..., Any]
) -> None:
    since = (billed - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%S")
    theirs = cli_cost(settings, cli, "--pipeline", P, "--by", "segment", "--since", since)
    by_version = cli_cost(settings, cli, "--pipeline", P, "--by", "version", "--since", since)
    sign_in(client, "olga")
    ours = client.get(f"/api/pipelines/{P}/cost", params={"since": since}).json()
    (mine,) = ours["pipelines"]
    same_figures(mine, theirs["pipelines"][0], rel=1e-4)
    assert mine["rightsizing"] == theirs["pipelines"][0]["rightsizing"] == []
    versions = {v["key"]: v for v in ours["versions"]}
    assert close(  # "(none)": storage, which grows with `now`
        {r["key"]: r["total"] for r in by_version["pipelines"][0]["rows"]},
        {k: v["total"] for k, v in versions.items()}, rel=1e-4, tiny=1e-6,
    )  # fmt: skip
    segments = {s["key"]: s for s in ours["segments"]}
    assert segments["EWR"]["predictions"] == 1300 and versions["v2"]["predictions"] == 600
    assert segments["JFK"]["usd_per_1000_predictions"] == pytest.approx(
        segments["JFK"]["serving"]["usd"] / 200 * 1000
    )

    page = client.get(f"/pipelines/{P}/cost", params={"since": since}).text
    keys = set(re.findall(r'<tr data-segment="([^"]*)"', page))
    assert keys == {"EWR", "JFK", "(none)", _escaped(HOSTILE)}
    assert set(re.findall(r'<tr data-version="([^"]*)"', page)) == {"v1", "v2", "(none)"}
    assert HOSTILE not in page and "&lt;img src=x" in page  # a segment's value, as text


def _escaped(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def test_bad_since_is_a_400_and_an_unknown_pipeline_a_404(
    client: TestClient, billed: datetime
) -> None:
    sign_in(client, "vic")
    for since, said in (("last week", "neither a duration nor a date"),
                        ("2999-01-01", "not in the past"), ("0d", "longer than 0"),
                        ("1000000d", "starts too long ago")):  # fmt: skip
        api = client.get("/api/cost", params={"since": since})
        assert api.status_code == 400 and said in api.json()["message"], since
        assert api.json()["hint"]
        page = client.get("/cost", params={"since": since})
        assert page.status_code == 400 and said in page.text and "Traceback" not in page.text
        one = client.get(f"/api/pipelines/{P}/cost", params={"since": since})
        assert one.status_code == 400
    assert client.get("/api/cost?per_page=0").status_code == 400
    assert client.get("/pipelines/nope/cost").status_code == 404
    assert client.get("/api/pipelines/nope/cost").json()["error"] == "not_found"


def test_no_cost_yet_is_explained(client: TestClient, stores: Stores) -> None:
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert("quiet", "olga", "never run", "kiln.yaml")
    sign_in(client, "vic")
    page = client.get("/cost")
    assert page.status_code == 200 and "No cost recorded yet" in page.text
    assert 'id="cost"' not in page.text
    one = client.get("/pipelines/quiet/cost")
    assert one.status_code == 200 and "No cost recorded yet" in one.text
    assert client.get("/api/cost").json()["pipelines"] == []


def test_a_page_view_does_not_measure_the_store(
    client: TestClient, billed: datetime, stores: Stores
) -> None:
    with stores.metadata.read() as uow:
        before = uow.storage_usage.list()
    sign_in(client, "vic")
    assert client.get("/cost").status_code == 200
    assert client.get(f"/pipelines/{P}/cost").status_code == 200
    with stores.metadata.read() as uow:
        assert uow.storage_usage.list() == before


@pytest.mark.slow
def test_a_real_run_costs_the_same_on_the_page_and_in_kiln_cost(
    client: TestClient,
    runner: Runner,
    make_config: Callable[..., LoadedConfig],
    settings: Settings,
    cli: Callable[..., Any],
) -> None:
    loaded = make_config()
    runner.run(loaded)
    name = loaded.config.name
    env = {"KILN_HOME": str(settings.home)}
    assert cli("cost", cwd=settings.home.parent, env=env).returncode == 0  # measures storage
    theirs = cli_cost(settings, cli, "--pipeline", name, "--by", "segment")
    sign_in(client, "olga")
    ours = client.get(f"/api/pipelines/{name}/cost").json()
    same_figures(ours["pipelines"][0], theirs["pipelines"][0])
    assert ours["pipelines"][0]["rightsizing"] == theirs["pipelines"][0]["rightsizing"]
    assert ours["pipelines"][0]["spent"]["training"]["usd"] > 0
    every = client.get("/api/cost").json()["pipelines"]
    same_figures(every[0], cli_cost(settings, cli)["pipelines"][0])
    page = client.get(f"/pipelines/{name}/cost").text
    assert {"EWR", "JFK", "LGA"} <= set(re.findall(r'<tr data-segment="([^"]*)"', page))
