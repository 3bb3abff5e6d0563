"""A full disk under the capture folder (a 2 MB tmpfs mounted by the test): write failures and
the backlog show in the server's metrics, offers never block, the backlog's memory stays within
its bound, whatever fits is written as space frees up, and every capture is accounted for."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prometheus_client import generate_latest

from kiln.serving._metrics import CaptureMetrics, Metrics
from kiln.stores import CaptureRecord, CaptureWriter, read_captures

pytestmark = pytest.mark.fault

FLUSH_ROWS = 200
MAX_BYTES = 1024 * 1024
OFFERS = 20_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs; skipped where mounting is not permitted (needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> list[Path]:
    """Files of 32 KB until the disk is full."""
    files = []
    for i in range(1_000):
        path = disk / f"filler-{i}"
        try:
            path.write_bytes(os.urandom(32 * 1024))
        except OSError:
            path.unlink(missing_ok=True)
            return files
        files.append(path)
    raise AssertionError("the tmpfs never filled up")


def capture(i: int) -> CaptureRecord:
    return CaptureRecord(
        request_id=f"r-{i}",
        ts=datetime.now(UTC),
        pipeline="flights",
        version=1,
        stage="production",
        segment="JFK",
        model="segment:JFK",
        fallback=False,
        features={"note": uuid.uuid4().hex * 3, "distance": i},
        prediction=1.5,
        error=None,
        latency_ms=1.0,
    )


def metric(metrics: Metrics, name: str) -> float:
    text = generate_latest(metrics.registry).decode()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    ]
    return sum(values)


def wait_until(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_full_disk_is_visible_bounded_and_written_as_space_frees(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fillers = fill(small_disk)
    metrics = Metrics()
    writer = CaptureWriter(
        str(small_disk),
        writer_id="w",
        max_queue=10**6,
        flush_rows=FLUSH_ROWS,
        flush_seconds=0.05,
        max_backlog_bytes=MAX_BYTES,
        events=CaptureMetrics(metrics),
    )
    with caplog.at_level(logging.WARNING, logger="kiln.stores.captures"):
        writer.start()
        slow = 0
        peak_bytes = 0
        for i in range(OFFERS):
            started = time.perf_counter()
            writer.offer(capture(i))
            slow += time.perf_counter() - started > 0.05
            peak_bytes = max(peak_bytes, writer.backlog_bytes)
            if i % 1_000 == 999:
                time.sleep(0.01)  # let the writer thread try (and fail) in between
        # offers never wait for storage: one that did would take a failed write's time every
        # flush; a few may wait for the GIL, the collector or a busy machine's scheduler
        assert slow <= 5, f"{slow} offers took more than 50 ms"

        wait_until(lambda: writer.errors >= 2, "failed writes")
        wait_until(lambda: metric(metrics, "kiln_capture_backlog_rows") > 0, "the backlog gauge")
        assert writer.written == 0
        assert writer.dropped > 0, "the backlog bound drops new captures"
        # the memory bound: what is kept stays within the bound plus one flush of rows
        row_bytes = writer.backlog_bytes / max(writer.queued, 1)
        assert peak_bytes <= MAX_BYTES + FLUSH_ROWS * row_bytes, (peak_bytes, MAX_BYTES)
        assert writer.queued + writer.dropped == OFFERS
        assert metric(metrics, "kiln_capture_write_errors_total") >= 2
        assert metric(metrics, "kiln_capture_backlog_rows") == writer.queued
        assert metric(metrics, "kiln_capture_backlog_bytes") > 0
        assert metric(metrics, "kiln_capture_written_total") == 0
        assert writer.failing is not None and "No space left" in writer.failing

        # a little space: some files fit and are written while the rest stays kept
        for path in fillers[:6]:
            path.unlink()
        wait_until(lambda: writer.written > 0, "the first files that fit")
        wait_until(lambda: writer.errors >= 6, "more failed writes")
        assert writer.queued > 0, "192 KB cannot hold the whole backlog"

        for path in fillers[6:]:
            path.unlink()
        wait_until(lambda: writer.queued == 0, "the whole backlog written")
        writer.close()

    assert writer.written + writer.dropped + writer.rejected + writer.queued == OFFERS
    assert writer.failing is None
    assert metric(metrics, "kiln_capture_written_total") == writer.written
    assert metric(metrics, "kiln_capture_backlog_rows") == 0
    assert metric(metrics, "kiln_capture_backlog_bytes") == 0
    stored = read_captures(str(small_disk), "flights")
    assert stored.num_rows == writer.written
    assert len(set(stored.column("request_id").to_pylist())) == writer.written
    files = list((small_disk / "captures").rglob("*.parquet"))
    assert max(pq.ParquetFile(f).metadata.num_rows for f in files) <= FLUSH_ROWS
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "a failing store is logged once per episode"
    assert "No space left" in errors[0].getMessage()
