"""Unseen categories on the predict path (in process, real versions): flagged per row, counted
per feature, captured, and answered as the version's policy says; X-Request-ID replacement."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest
from serving_support import PIPELINE, Trained, predictor, register_with

from kiln.serving._capture import Capture
from kiln.serving._metrics import Metrics
from kiln.serving._predict import Answer, Predictions
from kiln.serving._routing import Deployed, PipelineRoute, RoutingTable
from kiln.serving._schema import RequestSchema
from kiln.stores import CaptureWriter, read_captures

pytestmark = pytest.mark.slow


class Served:
    """One version served in process by the real ``Predictions``, capturing every request."""

    def __init__(self, home: Path, version: int, captures: Path) -> None:
        p = predictor(home, version)
        request = RequestSchema(
            p.schema, p.segment_column, max_instances=100, unseen=p.unseen_policy
        )
        deployed = Deployed(PIPELINE, version, p.digest, p, request, 1.0, datetime.now(UTC))
        route = PipelineRoute(PIPELINE, deployed, (), version, ())
        table = RoutingTable({PIPELINE: route}, read_at=datetime.now(UTC))
        self.metrics = Metrics()
        self.writer = CaptureWriter(str(captures), writer_id="test")
        self.writer.start()
        self.predictions = Predictions(
            lambda: table, self.metrics, Capture(self.writer, self.metrics), lambda: None
        )

    def post(self, body: dict[str, Any], request_id: bytes | None = None) -> Answer:
        return self.predictions.handle(
            PIPELINE,
            orjson.dumps(body),
            content_type=b"application/json",
            authorization=None,
            request_id=request_id,
            started=time.perf_counter(),
        )

    def unseen_metric(self) -> dict[str, float]:
        text = generate_latest(self.metrics.registry).decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("kiln_unseen_categories_total{"):
                feature = line.split('feature="', 1)[1].split('"', 1)[0]
                out[feature] = float(line.rsplit(" ", 1)[1])
        return out


def _rows(flight_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [dict(r) for r in flight_rows[:3]]
    rows[1]["dest"] = "ZZZ"  # unseen in training
    rows[2]["dest"], rows[2]["carrier"] = "QQQ", "Q9"
    return rows


def test_unseen_values_are_flagged_counted_and_captured(
    trained: Trained, tmp_path: Path, flight_rows: list
) -> None:
    served = Served(trained.home, 1, tmp_path / "captures")  # no policy: accept
    rows = _rows(flight_rows)
    batch = orjson.loads(served.post({"instances": rows}).body)
    assert batch["unseen"] == [[], ["dest"], ["dest", "carrier"]]
    expected = predictor(trained.home, 1).predict(rows)
    assert batch["predictions"] == expected.values.tolist()  # accepted: answered as missing
    assert batch["models"][1] == rows[1]["origin"]
    single = orjson.loads(served.post({"features": rows[0]}).body)
    assert single["unseen"] == []
    single = orjson.loads(served.post({"features": rows[2]}).body)
    assert single["unseen"] == ["dest", "carrier"] and single["fallback"] is False
    assert served.unseen_metric() == {"dest": 3.0, "carrier": 2.0}
    served.writer.close()
    captured = read_captures(str(tmp_path / "captures"), PIPELINE).to_pylist()
    assert [c["unseen"] for c in captured] == [
        [],
        ["dest"],
        ["dest", "carrier"],
        [],
        ["dest", "carrier"],
    ]
    assert all(c["error"] is None for c in captured)


def test_the_fallback_policy_answers_unseen_rows_with_the_fallback(
    trained: Trained, tmp_path: Path, flight_rows: list
) -> None:
    home = trained.copy(tmp_path / "home")
    version = register_with(home, 1, serving={"unseen_categories": "fallback"})
    served = Served(home, version, tmp_path / "captures")
    rows = _rows(flight_rows)
    batch = orjson.loads(served.post({"instances": rows}).body)
    assert batch["models"] == [rows[0]["origin"], "__fallback__", "__fallback__"]
    assert batch["fallback"] == [False, True, True]
    assert batch["unseen"] == [[], ["dest"], ["dest", "carrier"]]
    single = orjson.loads(served.post({"features": rows[1]}).body)
    assert single["model"] == "__fallback__" and single["unseen"] == ["dest"]
    served.writer.close()
    captured = read_captures(str(tmp_path / "captures"), PIPELINE).to_pylist()
    assert [c["fallback"] for c in captured] == [False, True, True, True]
    assert all(c["error"] is None for c in captured)  # not a model error


def test_the_reject_policy_answers_422_naming_the_value_and_the_known_ones(
    trained: Trained, tmp_path: Path, flight_rows: list
) -> None:
    home = trained.copy(tmp_path / "home")
    version = register_with(home, 1, serving={"unseen_categories": "reject"})
    served = Served(home, version, tmp_path / "captures")
    rows = _rows(flight_rows)
    ok = served.post({"features": rows[0]})
    assert ok.status == 200
    refused = served.post({"instances": rows})
    assert refused.status == 422
    error = orjson.loads(refused.body)["error"]
    assert error["code"] == "unseen_category"
    fields = error["fields"]
    assert [f["field"] for f in fields] == [
        "instances.1.dest", "instances.2.dest", "instances.2.carrier",
    ]  # fmt: skip
    assert fields[0]["got"] == "'ZZZ'" and fields[0]["problem"].startswith(
        "unseen category (known: "
    )
    assert "in all)" in fields[0]["problem"]  # the first few of the known categories
    served.writer.close()


def test_a_replaced_request_id_says_why(
    trained: Trained, tmp_path: Path, flight_rows: list
) -> None:
    served = Served(trained.home, 1, tmp_path / "captures")
    row = {"features": flight_rows[0]}
    kept = served.post(row, request_id=b"client-42")
    assert dict(kept.headers)[b"x-request-id"] == b"client-42"
    assert b"x-kiln-request-id-replaced" not in dict(kept.headers)
    for given, why in (
        (b"a b", b"not printable ASCII without spaces"),
        (b"x" * 129, b"longer than 128 characters"),
        (b"", b"empty"),
    ):
        answer = served.post(row, request_id=given)
        headers = dict(answer.headers)
        assert headers[b"x-request-id"] != given
        assert headers[b"x-kiln-request-id-replaced"] == why
        assert orjson.loads(answer.body)["request_id"] == headers[b"x-request-id"].decode()
    refused = dict(served.post({"features": {}}, request_id=b"a b").headers)
    assert refused[b"x-kiln-request-id-replaced"] == b"not printable ASCII without spaces"
    served.writer.close()
