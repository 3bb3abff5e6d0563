"""A monitor window of captures: by event time, typed and JSON features alike, stages filtered,
and a corrupt file skipped and named instead of failing the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from kiln.stores import CaptureWriter
from kiln.stores.capture import open_window
from tests.stores.test_captures import record

DAY = datetime(2024, 3, 1, tzinfo=UTC)
TYPES = pa.struct([("distance", pa.float64()), ("carrier", pa.string())])


def _write(root: str, records: list) -> None:
    with CaptureWriter(root, writer_id="w") as writer:
        for r in records:
            assert writer.offer(r)


def test_a_window_is_over_the_event_time_and_reads_typed_and_json_features(tmp_path: Path) -> None:
    root = str(tmp_path)
    served = DAY + timedelta(days=400)  # served much later than the events it describes
    _write(
        root,
        [
            # typed: the version's feature types, and an event time inside the window
            record(1, ts=served, event_ts=DAY + timedelta(hours=1), feature_types=TYPES,
                   features={"distance": 100.0, "carrier": "UA"}),
            # JSON (no feature types), event time inside the window
            record(3, ts=served, event_ts=DAY + timedelta(hours=2),
                   features={"distance": 300, "carrier": "AA"}),
            # outside the window by event time
            record(5, ts=served, event_ts=DAY + timedelta(days=1), feature_types=TYPES,
                   features={"distance": 500.0, "carrier": "UA"}),
            # a shadow's answer is not production traffic
            record(9, ts=served, event_ts=DAY, stage="shadow", feature_types=TYPES,
                   features={"distance": 900.0, "carrier": "UA"}),
            # no event time: its serving time decides (outside)
            record(11, ts=served, feature_types=TYPES, features={"distance": 1.0, "carrier": "B6"}),
        ],
    )  # fmt: skip
    with open_window(root, "flights", start=DAY, end=DAY + timedelta(days=1)) as window:
        assert window.skipped == {}
        assert window.rows == 2
        distance = window.feature_sql("distance", numeric=True)
        carrier = window.feature_sql("carrier", numeric=False)
        got = window.query(
            f"SELECT request_id, {distance} AS d, {carrier} AS c FROM captures ORDER BY request_id"
        ).to_pylist()
    assert got == [
        {"request_id": "flights-1", "d": 100.0, "c": "UA"},
        {"request_id": "flights-3", "d": 300.0, "c": "AA"},
    ]
    with open_window(
        root, "flights", start=served - timedelta(hours=1), end=served + timedelta(hours=1)
    ) as window:
        assert window.rows == 1  # only the one without an event time was served then


def test_a_corrupt_file_is_skipped_and_named(tmp_path: Path) -> None:
    root = str(tmp_path)
    _write(root, [record(i, ts=DAY + timedelta(minutes=i)) for i in range(1, 6)])
    folder = tmp_path / "captures" / "pipeline=flights" / "date=2024-03-01"
    bad = folder / "zz-corrupt.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    with open_window(root, "flights", start=DAY, end=DAY + timedelta(days=1)) as window:
        assert list(window.skipped) == [str(bad)]
        assert window.rows == 5
    with open_window(
        root, "flights", start=DAY + timedelta(days=2), end=DAY + timedelta(days=3)
    ) as w:
        assert w.rows == 0


def test_a_window_without_captures_is_empty(tmp_path: Path) -> None:
    with open_window(str(tmp_path), "flights", start=DAY, end=DAY + timedelta(days=1)) as window:
        assert window.empty and window.rows == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        open_window(str(tmp_path), "flights", start=DAY.replace(tzinfo=None), end=DAY)


def test_a_file_with_a_corrupt_data_page_is_skipped_when_a_query_reads_it(tmp_path: Path) -> None:
    """Its footer reads (so the first check passes) but its pages do not: the query that reads
    them fails, each file is then read in full, the bad one is skipped and named, and the query
    runs again over the others — the monitor never stops at such a file."""
    root = str(tmp_path)
    _write(root, [record(i, ts=DAY + timedelta(minutes=i)) for i in range(1, 201)])
    _write(root, [record(i, ts=DAY + timedelta(hours=5, minutes=i)) for i in range(300, 311)])
    files = sorted((tmp_path / "captures").rglob("*.parquet"))
    assert len(files) == 2
    victim = max(files, key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    for i in range(60, 400):
        raw[i] = 0xFF  # the data pages; the footer at the end stays intact
    victim.write_bytes(bytes(raw))
    with open_window(root, "flights", start=DAY, end=DAY + timedelta(days=1)) as window:
        assert window.skipped == {}  # the footer check passes
        got = window.query(
            "SELECT count(*) AS n, max(request_id) AS r, sum(latency_ms) AS s FROM captures"
        )
        assert list(window.skipped) == [str(victim)]
        assert got.column("n")[0].as_py() == 11
