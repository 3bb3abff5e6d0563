"""The API of a real server (2 workers): predictions equal the Predictor's, bad input is 4xx,
tokens are checked, and the pipeline reads, /metrics, /readyz and /healthz answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from serving_support import ADMIN, PIPELINE, PREDICT, Server, Trained, predictor, set_stage

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {PREDICT}"}


@pytest.fixture(scope="module")
def server(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = trained.copy(tmp_path_factory.mktemp("api") / "home")
    set_stage(home, 1, "production")
    server = Server(home, workers=2, predict_token=PREDICT)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        yield c


def url(name: str = PIPELINE) -> str:
    return f"/v1/pipelines/{name}/predict"


def test_single_and_batch_predictions_equal_the_predictor(
    server: Server, client: httpx.Client, flight_rows: list[dict[str, Any]]
) -> None:
    rows = flight_rows[:300]
    rows[0] = {**rows[0], "origin": "BOS"}  # a segment without a model: the fallback answers
    expected = predictor(server.home, 1).predict(rows)
    singles = [client.post(url(), json={"features": row}) for row in rows[:60]]
    assert {r.status_code for r in singles} == {200}
    got = [r.json() for r in singles]
    assert [g["prediction"] for g in got] == expected.values[:60].tolist()
    assert [g["model"] for g in got] == expected.model[:60]
    assert [g["fallback"] for g in got] == expected.fallback[:60].tolist()
    assert got[0]["model"] == "__fallback__" and got[0]["fallback"] is True
    assert got[0]["unseen"] == ["origin"] and got[1]["unseen"] == []  # BOS: never in training
    assert {g["version"] for g in got} == {1}
    assert all(r.headers["x-kiln-version"] == "1" for r in singles)

    batch = client.post(url(), json={"instances": rows})
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["predictions"] == expected.values.tolist()
    assert body["models"] == expected.model
    assert body["fallback"] == expected.fallback.tolist()
    assert body["unseen"][:2] == [["origin"], []]
    assert body["version"] == 1
    np.testing.assert_array_equal(np.array(body["predictions"][:60]), expected.values[:60])


def test_request_id_is_honoured_or_generated(client: httpx.Client, flight_rows: list) -> None:
    given = client.post(url(), json={"features": flight_rows[0]}, headers={"X-Request-ID": "r-1"})
    assert given.json()["request_id"] == "r-1" and given.headers["x-request-id"] == "r-1"
    made = [client.post(url(), json={"features": flight_rows[0]}) for _ in range(3)]
    ids = [r.json()["request_id"] for r in made]
    assert len(set(ids)) == 3
    assert [r.headers["x-request-id"] for r in made] == ids
    bad = client.post(url(), json={"features": flight_rows[0]}, headers={"X-Request-ID": "a b"})
    assert bad.json()["request_id"] != "a b"
    assert bad.headers["x-kiln-request-id-replaced"] == "not printable ASCII without spaces"
    assert "x-kiln-request-id-replaced" not in given.headers


def _problem(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def test_missing_extra_and_mistyped_features_are_422_naming_the_fields(
    client: httpx.Client, flight_rows: list[dict[str, Any]]
) -> None:
    row = dict(flight_rows[0])
    del row["temp"]
    row["colour"] = "red"
    row["distance"] = "far"
    row["dest"] = 42
    r = client.post(url(), json={"features": row})
    assert r.status_code == 422
    error = _problem(r)
    fields = {f["field"]: f["problem"] for f in error["fields"]}
    assert "missing" in fields["features.temp"]
    assert "unknown feature" in fields["features.colour"]
    assert "number" in fields["features.distance"]
    assert "string" in fields["features.dest"]
    assert "features.temp" in error["message"] and error["code"] == "invalid_input"

    batch = client.post(url(), json={"instances": [flight_rows[0], {**flight_rows[1], "hour": []}]})
    assert batch.status_code == 422
    assert [f["field"] for f in _problem(batch)["fields"]] == ["instances.1.hour"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"features": {', 400, "invalid_json"),
        (b"\xff\xfe not json", 400, "invalid_json"),
        (b"[1, 2, 3]", 422, "invalid_input"),
        (b"{}", 422, "invalid_input"),
        (b'{"features": {}, "instances": []}', 422, "invalid_input"),
        (b'{"instances": []}', 422, "invalid_input"),
        (b'{"features": {"temp": NaN}}', 422, "invalid_input"),
        (b'{"features": {"temp": 1e999}}', 422, "invalid_input"),
        (b'{"features": {"temp": 1' + b"0" * 400 + b"}}", 422, "invalid_input"),
        (b'{"features": {"temp": {"a": [[[[{"b": null}]]]]}}}', 422, "invalid_input"),
        (b'{"features": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 400, "invalid_json"),
        (b'{"features": "origin=JFK"}', 422, "invalid_input"),
    ],
)
def test_bad_bodies_are_4xx_never_500(
    client: httpx.Client, body: bytes, status: int, code: str
) -> None:
    r = client.post(url(), content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert _problem(r)["code"] == code


def test_huge_numbers_and_nan_name_the_field(client: httpx.Client, flight_rows: list) -> None:
    body = b'{"features": ' + httpx.Request("POST", "/", json=flight_rows[0]).content[:-1]
    r = client.post(
        url(), content=body + b', "temp": NaN}}', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert [f["field"] for f in _problem(r)["fields"]] == ["features.temp"]


def test_wrong_content_type_is_415(client: httpx.Client, flight_rows: list) -> None:
    r = client.post(url(), data={"features": "x"})
    assert r.status_code == 415 and _problem(r)["code"] == "unsupported_media_type"
    r = client.post(url(), content=b'{"features": {}}')
    assert r.status_code == 415


def test_batch_cap_is_413(client: httpx.Client, flight_rows: list) -> None:
    from kiln.serving import MAX_INSTANCES

    rows = [flight_rows[0]] * (MAX_INSTANCES + 1)
    r = client.post(url(), json={"instances": rows})
    assert r.status_code == 413
    assert str(MAX_INSTANCES) in _problem(r)["message"]


def test_unknown_pipeline_is_404(client: httpx.Client, flight_rows: list) -> None:
    r = client.post(url("no-such-pipeline"), json={"features": flight_rows[0]})
    assert r.status_code == 404
    assert PIPELINE in _problem(r)["message"]
    assert client.get("/v1/pipelines/no-such-pipeline").status_code == 404


def test_predict_token(server: Server, flight_rows: list) -> None:
    body = {"features": flight_rows[0]}
    missing = httpx.post(server.url + url(), json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(server.url + url(), json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert PREDICT not in wrong.text
    admin = httpx.post(server.url + url(), json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert admin.status_code == 200
    assert httpx.get(server.url + "/v1/pipelines").status_code == 401


def test_admin_token(server: Server, client: httpx.Client) -> None:
    promote = f"{server.url}/v1/pipelines/{PIPELINE}/promote"
    assert httpx.post(promote, json={"version": 1}).status_code == 401
    assert client.post(promote, json={"version": 1}).status_code == 401  # the predict token
    r = httpx.post(promote, json={"version": 1}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is False
    bad = httpx.post(promote, json={"version": "one"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert bad.status_code == 422 and _problem(bad)["fields"][0]["field"] == "version"
    missing = httpx.post(
        promote, json={"version": 99}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert missing.status_code == 404


def test_admin_endpoints_are_403_without_an_admin_token(trained: Trained, serve, tmp_path: Path):
    server = serve(trained.copy(tmp_path / "home"), admin_token=None)
    server.wait_ready()
    r = httpx.post(f"{server.url}/v1/pipelines/{PIPELINE}/rollback", json={"reason": "x"})
    assert r.status_code == 403
    assert "KILN_ADMIN_TOKEN" in _problem(r)["message"]


def test_pipeline_reads(client: httpx.Client) -> None:
    listed = client.get("/v1/pipelines").json()
    assert listed == [
        {
            "name": PIPELINE,
            "production": 1,
            "registry_production": 1,
            "canary": None,
            "canary_share": None,
            "shadows": [],
            "last_reload_error": None,
        }
    ]
    detail = client.get(f"/v1/pipelines/{PIPELINE}").json()
    assert detail["production"]["version"] == 1
    assert detail["production"]["capture_sample_rate"] == 0.5
    assert set(detail["production"]["segments"]) == {"EWR", "JFK", "LGA"}
    assert detail["segment_column"] == "origin"
    kinds = {f["name"]: f["kind"] for f in detail["features"]}
    assert kinds["origin"] == "categorical" and kinds["temp"] == "numeric"
    assert detail["last_reload_error"] is None
    assert (detail["canary"], detail["canary_share"], detail["registry_canary"]) == (None,) * 3


def test_health_readiness_metrics_and_openapi(server: Server, client: httpx.Client) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    client.post(url(), json={"features": {"origin": "JFK"}})  # a 422, counted
    text = httpx.get(server.url + "/metrics").text
    assert re.search(rf'kiln_requests_total{{code="200",pipeline="{PIPELINE}",version="1"}}', text)
    assert re.search(rf'kiln_requests_total{{code="422",pipeline="{PIPELINE}",version="1"}}', text)
    assert "kiln_request_latency_seconds_bucket" in text
    assert 'segment="JFK"' in text
    assert re.search(  # the BOS rows of the first test
        rf'kiln_unseen_categories_total{{feature="origin",pipeline="{PIPELINE}",version="1"}}', text
    )
    assert re.search(rf'kiln_fallbacks_total{{pipeline="{PIPELINE}",stage="production"', text)
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/pipelines/{name}/predict" in spec["paths"]
    assert "/v1/pipelines/{name}/promote" in spec["paths"]
    captured = spec["paths"]["/v1/pipelines/{name}/predict"]["post"]["responses"]["200"]
    assert "in-memory capture queue" in captured["headers"]["X-Kiln-Captured"]["description"]
    assert "kiln_capture_backlog_rows" in text and "kiln_capture_queued_total" in text
