"""Latency percentiles and error rates of a window per version and segment, against numpy over
the same requests; files written before the ``status`` column count their error text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kiln.monitoring.findings import ALL
from kiln.monitoring.latency import NO_SEGMENT, window_latency
from kiln.stores import CaptureWriter
from kiln.stores.capture import CAPTURE_SCHEMA, open_window
from tests.stores.test_captures import record

DAY = datetime(2013, 7, 1, tzinfo=UTC)


def test_latency_and_errors_per_version_and_segment(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    latency = rng.lognormal(2.0, 0.6, size=600)
    # 400 and 413 are refusals of the request itself, before any version saw it: a client's
    # fault, neither the version's requests nor its errors
    statuses = rng.choice([200, 200, 200, 200, 422, 500, 400, 413], size=600)
    records = []
    for i in range(600):
        version = 3 if i < 450 else 4
        stage = "production" if version == 3 else "canary"
        segment = ["EWR", "JFK", None][i % 3]
        status = int(statuses[i])
        records.append(
            record(
                i, ts=DAY + timedelta(seconds=i), version=version, stage=stage, segment=segment,
                latency_ms=float(latency[i]), status=status,
                prediction=None if status != 200 else 1.0,
                error=None if status == 200 else f"{status} refused",
            )
        )  # fmt: skip
    # a shadow's requests are not the window's traffic
    records.append(record(999, ts=DAY, stage="shadow", latency_ms=1e6, status=500, error="x"))
    with CaptureWriter(str(tmp_path), writer_id="w") as writer:
        for r in records:
            assert writer.offer(r)
    # a file written before the status column: its error text says which failed
    old_schema = pa.schema([f for f in CAPTURE_SCHEMA if f.name not in ("status", "event_ts")])
    old = pa.table(
        {
            "request_id": ["old-1", "old-2"], "ts": [DAY + timedelta(hours=5)] * 2,
            "version": [3, 3], "stage": ["production"] * 2, "segment": ["EWR", "EWR"],
            "model": ["segment:EWR"] * 2, "fallback": [False, False],
            "features": ['{"distance": 1}'] * 2, "prediction": [1.0, None],
            "error": [None, "500 the version failed"], "latency_ms": [3.0, 4.0],
            "label": [None, None], "probabilities": [None, None], "unseen": [[], None],
        },
        schema=old_schema,
    )  # fmt: skip
    pq.write_table(old, tmp_path / "captures/pipeline=flights/date=2013-07-01/old.parquet")

    with open_window(str(tmp_path), "flights", start=DAY, end=DAY + timedelta(days=1)) as window:
        rows = {(r.version, r.segment): r for r in window_latency(window)}

    def expect(version: int, segment: str | None) -> tuple[int, int, list[float]]:
        picked = [
            i for i in range(600)
            if (3 if i < 450 else 4) == version and statuses[i] not in (400, 413)
            and (segment == ALL or ["EWR", "JFK", None][i % 3] == segment)
        ]  # fmt: skip
        lat = [float(latency[i]) for i in picked]
        errors = sum(1 for i in picked if statuses[i] != 200)
        if version == 3 and segment in ("EWR", ALL):
            lat += [3.0, 4.0]
            errors += 1
        return len(lat), errors, lat

    assert set(rows) == {(v, s) for v in (3, 4) for s in ("EWR", "JFK", NO_SEGMENT, ALL)}
    for (version, segment), row in rows.items():
        n, errors, lat = expect(version, None if segment == NO_SEGMENT else segment)
        assert (row.requests, row.errors) == (n, errors), (version, segment)
        assert row.error_rate == errors / n
        assert np.isclose(row.p50_ms, np.percentile(lat, 50))
        assert np.isclose(row.p95_ms, np.percentile(lat, 95))
        assert np.isclose(row.p99_ms, np.percentile(lat, 99))


def test_an_empty_window_has_no_rows(tmp_path: Path) -> None:
    with open_window(str(tmp_path), "flights", start=DAY, end=DAY + timedelta(days=1)) as window:
        assert window_latency(window) == []
