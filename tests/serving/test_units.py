"""In-process pieces of the server: the request schema, capture and shadow queues that drop
(and count) instead of blocking, and readiness."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError
from serving_support import PIPELINE, Trained, predictor, wait_for

from kiln.pipeline.features import FeatureSchema
from kiln.serving._capture import Capture
from kiln.serving._errors import ApiError
from kiln.serving._launch import settings_env
from kiln.serving._metrics import Metrics
from kiln.serving._routing import Deployed, PipelineRoute, RoutingTable
from kiln.serving._schema import RequestSchema
from kiln.serving._service import Service
from kiln.serving._shadow import ShadowJob, ShadowRunner
from kiln.settings import Settings
from kiln.stores import CaptureWriter, read_captures

SCHEMA = FeatureSchema.from_dict(
    [
        {"name": "carrier", "kind": "categorical", "dtype": "string", "categories": ["AA"]},
        {"name": "month", "kind": "numeric", "dtype": "int64"},
        {"name": "holiday", "kind": "numeric", "dtype": "bool"},
    ]
)


def test_the_segment_column_is_required_even_when_it_is_not_a_feature() -> None:
    schema = RequestSchema(SCHEMA, "origin", max_instances=3)
    rows, batch = schema.parse(
        b'{"features": {"carrier": "AA", "month": 7, "holiday": true, "origin": 12}}'
    )
    assert not batch
    assert rows == [{"carrier": "AA", "month": 7.0, "holiday": 1.0, "origin": "12"}]
    with pytest.raises(ApiError) as info:
        schema.parse(b'{"features": {"carrier": "AA", "month": 7, "holiday": false}}')
    assert info.value.status == 422
    assert info.value.fields[0]["field"] == "features.origin"
    with pytest.raises(ApiError) as info:
        schema.parse(b'{"instances": [' + b",".join([b"{}"] * 4) + b"]}")
    assert info.value.status == 413


def test_a_numeric_segment_column_routes_integers_as_training_named_them() -> None:
    rows, _ = RequestSchema(SCHEMA, "month", max_instances=3).parse(
        b'{"features": {"carrier": null, "month": 7.0, "holiday": null}}'
    )
    assert rows[0]["month"] == 7 and isinstance(rows[0]["month"], int)


def _deployed(home: Path) -> Deployed:
    p = predictor(home, 1)
    request = RequestSchema(p.schema, p.segment_column, max_instances=10)
    return Deployed(PIPELINE, 1, p.digest, p, request, 1.0, datetime.now(UTC))


def _count(metrics: Metrics, name: str) -> float:
    text = generate_latest(metrics.registry).decode()
    lines = [line for line in text.splitlines() if line.startswith(name + "{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_a_full_capture_queue_drops_and_counts(
    trained: Trained, tmp_path: Path, flight_rows: list
) -> None:
    deployed = _deployed(trained.home)
    metrics = Metrics()
    writer = CaptureWriter(str(tmp_path / "captures"), writer_id="test", max_queue=2)
    capture = Capture(writer, metrics)
    rows = flight_rows[:3]
    prediction = deployed.predictor.predict(rows)
    ok = capture.rows(
        deployed, "production", "r", rows, prediction,
        batch=True, ts=datetime.now(UTC), latency_ms=1.0,
    )  # fmt: skip
    assert ok is False
    assert writer.dropped == 1
    assert _count(metrics, "kiln_capture_dropped_total") == 1
    assert _count(metrics, "kiln_capture_queued_total") == 2
    writer.close()


@pytest.mark.parametrize(
    ("body", "features"),
    [
        (b'{"features": {"origin": "JFK", "temp": []}}', {"origin": "JFK", "temp": []}),
        (b'{"instances": [{"origin": 7}, 3]}', {"origin": 7}),
        (b'{"instances": [3, {"origin": "JFK"}]}', {}),
        (b'{"features": "origin=JFK"}', {}),
        (b"[1, 2]", {}),
        (b'{"features": {', {}),
        (b"\xff not json", {}),
    ],
)
def test_a_refused_request_is_one_capture_of_what_its_body_holds(
    trained: Trained, tmp_path: Path, body: bytes, features: dict
) -> None:
    deployed = _deployed(trained.home)
    writer = CaptureWriter(str(tmp_path), writer_id="test")
    capture = Capture(writer, Metrics())
    error = ApiError(422, "invalid_input", "x" * 600)
    ts = datetime.now(UTC)
    assert capture.refused(deployed, "canary", "r-1", body, error, ts=ts, latency_ms=2.0)
    writer.close()
    (got,) = read_captures(str(tmp_path), PIPELINE, stage=None).to_pylist()
    assert orjson.loads(got["features"]) == features
    assert got["segment"] == (None if not features else str(features["origin"]))
    assert (got["request_id"], got["stage"], got["version"]) == ("r-1", "canary", 1)
    assert (got["model"], got["fallback"], got["prediction"]) == ("(none)", False, None)
    assert got["error"].startswith("422 invalid_input: xxx") and len(got["error"]) == 500


def test_a_full_shadow_queue_drops_and_counts(trained: Trained, flight_rows: list) -> None:
    deployed = _deployed(trained.home)
    metrics = Metrics()
    shadow = ShadowRunner(Capture(None, metrics), metrics, max_queue=2)  # not started
    job = ShadowJob(PIPELINE, "r", flight_rows[:1], False, False, datetime.now(UTC), (deployed,))
    assert [shadow.offer(job) for _ in range(3)] == [True, True, False]
    assert _count(metrics, "kiln_shadow_dropped_total") == 1
    shadow.start()
    shadow.close()
    assert shadow.done == 2


def test_readiness_says_what_is_missing(trained: Trained) -> None:
    assert RoutingTable({}).missing() == ["the registry has not been read yet"]
    waiting = PipelineRoute(PIPELINE, None, (), registry_production=2, registry_shadows=())
    table = RoutingTable({PIPELINE: waiting}, read_at=datetime.now(UTC))
    assert table.missing() == [f"{PIPELINE} v2: not loaded yet"]
    serving = PipelineRoute(PIPELINE, _deployed(trained.home), (), 1, ())
    assert RoutingTable({PIPELINE: serving}, read_at=datetime.now(UTC)).missing() == []


def test_capture_settings_reach_the_workers(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = {
        "capture_flush_seconds": 0.25,
        "capture_flush_rows": 300,
        "capture_max_queue": 2_000,
        "capture_max_backlog_bytes": 10**6,
    }
    for key, value in settings_env(Settings(home=trained.home, **capture)).items():
        if value is not None:
            monkeypatch.setenv(key, value)
    in_worker = Settings()  # as app_from_env builds it
    assert {k: getattr(in_worker, k) for k in capture} == capture
    with pytest.raises(ValidationError, match="capture_flush_seconds"):
        Settings(capture_flush_seconds=0)


def test_failing_capture_writes_show_in_readiness_and_metrics(
    trained: Trained, tmp_path: Path, flight_rows: list
) -> None:
    home = trained.copy(tmp_path / "home")
    blocker = Path(Settings(home=home).artifact_root) / "captures"
    blocker.write_text("a file where the capture folder should be")
    service = Service(Settings(home=home, capture_flush_seconds=0.02))
    service.start()
    try:
        deployed = _deployed(home)
        rows = flight_rows[:5]
        prediction = deployed.predictor.predict(rows)
        assert service.capture.rows(
            deployed, "production", "r", rows, prediction,
            batch=True, ts=datetime.now(UTC), latency_ms=1.0,
        )  # fmt: skip
        error = wait_for(service.capture_error, what="the capture error")
        assert "captures cannot be written to" in error and "5 kept in memory" in error
        assert _count(service.metrics, "kiln_capture_write_errors_total") >= 1
        assert _count(service.metrics, "kiln_capture_queued_total") == 5
        assert _count(service.metrics, "kiln_capture_written_total") == 0
        wait_for(lambda: _gauge(service.metrics, "kiln_capture_backlog_rows") == 5, what="gauge")

        blocker.unlink()
        wait_for(lambda: service.capture_error() is None, what="recovery")
        wait_for(lambda: _count(service.metrics, "kiln_capture_written_total") == 5, what="5")
        wait_for(lambda: _gauge(service.metrics, "kiln_capture_backlog_rows") == 0, what="gauge")
    finally:
        service.stop()


def _gauge(metrics: Metrics, name: str) -> float:
    text = generate_latest(metrics.registry).decode()
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.rsplit(" ", 1)[1])
