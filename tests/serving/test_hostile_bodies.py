"""Hostile bodies on a real server (``python -m kiln.serving``): refused large bodies leave no
trace in the worker's memory, and an oversized body is refused from its size, before or while it
is read, with the limit and how to raise it."""

from __future__ import annotations

import gc
import itertools
import select
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from serving_support import PIPELINE, Trained, predictor, set_stage

from kiln.serving import MAX_INSTANCES
from kiln.serving._capture import Capture
from kiln.serving._launch import settings_env
from kiln.serving._metrics import Metrics
from kiln.serving._predict import Predictions
from kiln.serving._routing import Deployed, PipelineRoute, RoutingTable
from kiln.serving._schema import RequestSchema
from kiln.settings import Settings
from kiln.stores import CaptureWriter, read_captures

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` (VmRSS of /proc/PID/status), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def refused_bodies(rows: list[dict[str, Any]]) -> list[tuple[bytes, int, str]]:
    """Three large bodies that the server must refuse: a batch one row over the row limit (413,
    1.5 MB), a full batch whose last row has a text where a number belongs (422, 1.5 MB), and
    a body cut inside a 4 MB text (invalid JSON, 400)."""
    batch = list(itertools.islice(itertools.cycle(rows), MAX_INSTANCES + 1))
    over = orjson.dumps({"instances": batch})
    bad_row = {**rows[0], "temp": "warm"}
    invalid = orjson.dumps({"instances": [*batch[: MAX_INSTANCES - 1], bad_row]})
    broken = b'{"features": {"origin": "' + b"J" * (4 * MIB)
    return [
        (over, 413, "too_many_instances"),
        (invalid, 422, "invalid_input"),
        (broken, 400, "invalid_json"),
    ]


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The cycle collector off, as good as a server worker's rare collections."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_refused_body_is_referenced_by_nothing_once_answered(
    trained: Trained, tmp_path: Path, flight_rows: list[dict[str, Any]], no_gc: None
) -> None:
    p = predictor(trained.home, 2)
    request = RequestSchema(p.schema, p.segment_column, max_instances=MAX_INSTANCES)
    deployed = Deployed(PIPELINE, 2, p.digest, p, request, 1.0, datetime.now(UTC))
    table = RoutingTable(
        {PIPELINE: PipelineRoute(PIPELINE, deployed, (), 2, ())}, read_at=datetime.now(UTC)
    )
    metrics = Metrics()
    writer = CaptureWriter(str(tmp_path / "captures"), writer_id="test")
    writer.start()
    predictions = Predictions(lambda: table, metrics, Capture(writer, metrics), lambda: None)
    try:
        for body, status, code in refused_bodies(flight_rows):
            held = sys.getrefcount(body)
            answer = predictions.handle(
                PIPELINE, body, content_type=b"application/json", authorization=None,
                request_id=None, started=time.perf_counter(),
            )  # fmt: skip
            assert (answer.status, orjson.loads(answer.body)["error"]["code"]) == (status, code)
            assert answer.headers[-2:] == [(b"x-kiln-captured", b"1"), (b"x-kiln-version", b"2")]
            assert sys.getrefcount(body) == held, f"the {status} left its body referenced"
    finally:
        writer.close()


@pytest.mark.fault
def test_a_thousand_refused_large_bodies_leave_the_worker_memory_where_it_was(
    trained: Trained, serve, tmp_path: Path, flight_rows: list[dict[str, Any]]
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 2, "production")  # captures 100%: every refused request is captured too
    server = serve(home)
    server.wait_ready()
    url = f"{server.url}/v1/pipelines/{PIPELINE}/predict"
    bodies = refused_bodies(flight_rows)
    bodies.append(bodies[-1])  # the invalid JSON (cheap to parse, the most bytes) twice
    assert all(MIB < len(body) < 8 * MIB for body, _, _ in bodies)
    headers = {"Content-Type": "application/json"}

    def post(n: int) -> None:
        with httpx.Client(timeout=60) as client:
            for i in range(n):
                body, status, code = bodies[i % len(bodies)]  # 1/4 413, 1/4 422, 1/2 400
                r = client.post(url, content=body, headers=headers)
                assert r.status_code == status, r.text[:500]
                assert r.json()["error"]["code"] == code

    post(30)  # warm-up: the allocator's arenas, pydantic's and orjson's buffers
    started = time.monotonic()
    before = rss_mb(server.proc.pid)
    for _ in range(4):
        post(250)
        print(f"RSS {rss_mb(server.proc.pid):.0f} MB")
    after = rss_mb(server.proc.pid)
    seconds = time.monotonic() - started
    print(f"worker RSS {before:.0f} -> {after:.0f} MB after 1,000 refused bodies ({seconds:.0f} s)")
    assert after <= before * 1.10, f"worker RSS grew from {before:.0f} MB to {after:.0f} MB"
    server.stop()


def raw_post(
    port: int, headers: bytes, chunks: list[bytes], path: str = f"/v1/pipelines/{PIPELINE}/predict"
) -> tuple[int, dict[str, Any]]:
    """POST over a plain socket: ``headers``, then each of ``chunks`` until the server answers
    (a 413 may come before the body was sent); returns the status and the JSON answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: kiln\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + headers
            + b"\r\n"
        )
        for chunk in chunks:
            if select.select([sock], [], [], 0.2)[0]:
                break  # answered
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


def test_an_oversized_body_is_refused_from_its_size_before_it_is_read(
    trained: Trained, serve, tmp_path: Path, flight_rows: list[dict[str, Any]], monkeypatch
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 2, "production")
    server = serve(home)  # the default limit: 8 MiB
    server.wait_ready()
    # a declared 9 MiB body: answered from its Content-Length, not one byte of it sent
    status, answer = raw_post(server.port, b"Content-Length: 9437184\r\n", [])
    assert status == 413
    error = answer["error"]
    assert error["code"] == "body_too_large"
    assert error["message"] == (
        "the body (9,437,184 bytes) is larger than the server's limit of 8,388,608 bytes (8 MiB)"
    )
    assert "--max-body-bytes" in error["hint"] and "KILN_MAX_BODY_BYTES" in error["hint"]
    # chunked, no Content-Length: refused once what was read goes over the limit
    mib = b"%x\r\n" % MIB + b" " * MIB + b"\r\n"
    status, answer = raw_post(server.port, b"Transfer-Encoding: chunked\r\n", [mib] * 12)
    assert status == 413
    assert answer["error"]["message"].startswith("the body is larger than the server's limit")
    # every other request has a small cap (admin writes carry a reason), before any token check
    promote = f"/v1/pipelines/{PIPELINE}/promote"
    status, answer = raw_post(server.port, b"Content-Length: 52428800\r\n", [], path=promote)
    assert status == 413
    assert "limit of 65,536 bytes" in answer["error"]["message"]
    status, answer = raw_post(server.port, b"Transfer-Encoding: chunked\r\n", [mib] * 3, promote)
    assert status == 413
    r = httpx.post(f"{server.url}{promote}", json={"version": 2, "reason": "r"}, timeout=30)
    assert r.status_code == 401, r.text  # a small body still reaches the API
    # just under the limit, the body is read and predicted
    row = orjson.dumps(flight_rows[0])
    padded = b'{"instances": [' + row + b"]" + b" " * (8 * MIB - len(row) - 40) + b"}"
    with httpx.Client(timeout=60) as client:
        url = f"{server.url}/v1/pipelines/{PIPELINE}/predict"
        r = client.post(url, content=padded, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        server.stop()
        # the limit is a setting (KILN_MAX_BODY_BYTES, `kiln serve --max-body-bytes`)
        monkeypatch.setenv("KILN_MAX_BODY_BYTES", str(MIB))
        small = serve(home)
        small.wait_ready()
        url = f"{small.url}/v1/pipelines/{PIPELINE}/predict"
        r = client.post(url, content=padded, headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert "limit of 1,048,576 bytes (1 MiB)" in r.json()["error"]["message"]
        batch = orjson.dumps({"instances": flight_rows[:100]})
        r = client.post(url, content=batch, headers={"Content-Type": "application/json"})
        assert r.status_code == 200


def test_the_body_limit_travels_to_the_server_workers() -> None:
    assert Settings().max_body_bytes == 8 * MIB
    env = settings_env(Settings(max_body_bytes=3 * MIB))
    assert env["KILN_MAX_BODY_BYTES"] == str(3 * MIB)


def test_a_20_mb_category_is_refused_naming_the_field_and_nothing_of_it_is_captured(
    trained: Trained, serve, tmp_path: Path, flight_rows: list[dict[str, Any]], monkeypatch
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 2, "production")  # captures 100%
    monkeypatch.setenv("KILN_MAX_BODY_BYTES", str(32 * MIB))  # let 20 MB bodies in
    server = serve(home)
    server.wait_ready()
    url = f"{server.url}/v1/pipelines/{PIPELINE}/predict"
    huge = "Z" * (20 * MIB)
    limit = "a text of at most 256 characters (serving.max_text_length); got 20,971,520"
    with httpx.Client(timeout=60) as client:

        def post(rid: str, body: dict[str, Any]) -> httpx.Response:
            headers = {"X-Request-ID": rid, "Content-Type": "application/json"}
            return client.post(url, content=orjson.dumps(body), headers=headers)

        r = post("huge-single", {"features": {**flight_rows[0], "dest": huge}})
        assert r.status_code == 422, r.text[:300]
        assert r.json()["error"]["fields"] == [
            {"field": "features.dest", "problem": limit, "got": repr(huge)[:57] + "..."}
        ]
        assert "features.dest: " + limit in r.json()["error"]["message"]
        rows = [flight_rows[1], flight_rows[2], {**flight_rows[3], "carrier": huge}]
        r = post("huge-batch", {"instances": rows})
        assert r.status_code == 422
        assert [f["field"] for f in r.json()["error"]["fields"]] == ["instances.2.carrier"]
        at_limit = "D" * 256
        r = post("at-limit", {"features": {**flight_rows[4], "dest": at_limit}})
        assert r.status_code == 200, r.text[:300]
        assert r.json()["unseen"] == ["dest"] and r.headers["x-kiln-captured"] == "1"
    server.stop()
    captures = read_captures(Settings(home=home).artifact_root, PIPELINE, stage=None)
    records = {c["request_id"]: c for c in captures.to_pylist()}
    assert set(records) == {"huge-single", "huge-batch", "at-limit"}
    assert orjson.loads(records["at-limit"]["features"])["dest"] == at_limit
    for rid in ("huge-single", "huge-batch"):
        assert records[rid]["error"].startswith("422 invalid_input: 1 problem(s)")
        assert len(records[rid]["features"]) < 1_000  # the features, the huge text as null
    assert orjson.loads(records["huge-single"]["features"])["dest"] is None
    stored = sum(f.stat().st_size for f in (tmp_path / "home").rglob("*.parquet"))
    assert stored < MIB, f"{stored:,} bytes of captures"
