"""The capture writer: ``offer`` never blocks the server; a thread writes Parquet in batches."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq

from kiln.errors import StoreError
from kiln.stores.artifacts import FsspecArtifactStore
from kiln.stores.capture._records import CAPTURE_SCHEMA, CaptureRecord, to_table, utc_date

__all__ = ["CaptureWriter"]

logger = logging.getLogger("kiln.stores.captures")

_WRITER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_BAD_ROW = (pa.ArrowException, TypeError, ValueError, OverflowError)


class CaptureWriter:
    """Queues captures without blocking and writes them from a background thread.

    ``offer`` holds a lock only to check the bound and append (no I/O happens under it).
    Accepted captures stay counted in ``queued`` until they are on storage: after a failed write
    they are kept and retried with a backoff, and while they are kept new captures are dropped
    once ``max_queue`` is reached. ``written + dropped + rejected + queued`` always equals the
    number of offers; ``rejected`` counts records that cannot be stored at all (a field of the
    wrong type), which the thread logs once and skips rather than retrying forever.
    """

    def __init__(
        self,
        root_url: str,
        *,
        writer_id: str,
        max_queue: int = 100_000,
        flush_rows: int = 5_000,
        flush_seconds: float = 1.0,
    ) -> None:
        if not _WRITER_ID.fullmatch(writer_id):
            raise ValueError(
                f"invalid capture writer_id {writer_id!r}: expected letters, digits, '_', '.', '-'"
                " (unique per server process, e.g. '<host>-<pid>')"
            )
        if max_queue < 1 or flush_rows < 1 or flush_seconds <= 0:
            raise ValueError("max_queue and flush_rows must be >= 1 and flush_seconds > 0")
        self.root_url = root_url
        self.writer_id = writer_id
        self._store = FsspecArtifactStore(root_url)
        self._max_queue = max_queue
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._queue: deque[CaptureRecord] = deque()
        self._outstanding = 0  # accepted, not yet written nor rejected (queue + retry buffer)
        self._pending: list[CaptureRecord] = []  # writer thread only: rows of failed writes
        self._closed = False
        self._dropped = self._written = self._rejected = self._errors = 0
        self._seq = 0
        self._failing = False
        self._warned_rejects = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = 0.0
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"CaptureWriter({self.root_url!r}, writer_id={self.writer_id!r})"

    def __enter__(self) -> CaptureWriter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def written(self) -> int:
        return self._written

    @property
    def queued(self) -> int:
        return self._outstanding

    @property
    def rejected(self) -> int:
        return self._rejected

    @property
    def errors(self) -> int:
        """Failed file writes so far (their rows were kept and retried)."""
        return self._errors

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise StoreError(
                    f"capture writer {self.writer_id!r} is closed",
                    hint="create a new CaptureWriter",
                )
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"kiln-capture-{self.writer_id}", daemon=True
                )
                self._thread.start()

    def offer(self, record: CaptureRecord) -> bool:
        """Queue ``record``; False (and ``dropped`` + 1) when the queue is full or closed."""
        with self._lock:
            if self._outstanding >= self._max_queue or self._closed:
                self._dropped += 1
                return False
            self._outstanding += 1
            self._queue.append(record)
            full = len(self._queue) == self._flush_rows
        if full:
            self._wake.set()
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write every accepted capture, then stop the thread. Idempotent."""
        with self._lock:
            first = not self._closed
            self._closed = True
            thread = self._thread
            if thread is None and self._outstanding:
                thread = self._thread = threading.Thread(target=self._run, daemon=True)
                thread.start()
        if first:
            self._deadline = time.monotonic() + timeout
            self._stop.set()
            self._wake.set()
        if thread is not None:
            thread.join(timeout)
        if self._outstanding:
            logger.error(
                "capture writer %s closed with %d captures not written to %s",
                self.writer_id, self._outstanding, self.root_url,
            )  # fmt: skip

    # -- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self._flush_seconds
        retry_at = 0.0
        failures = 0
        while True:
            now = time.monotonic()
            stopping = self._stop.is_set()
            if now >= retry_at and (
                stopping or now >= next_flush or len(self._queue) >= self._flush_rows
            ):
                try:
                    ok = self._flush()
                except Exception as e:  # a bug must not stop the capture thread; rows are kept
                    ok = False
                    self._failed(e)
                now = time.monotonic()
                next_flush = now + self._flush_seconds
                failures = 0 if ok else failures + 1
                backoff = min(self._flush_seconds * 2 ** min(failures - 1, 20), 30.0)
                retry_at = 0.0 if ok else now + (min(backoff, 0.05) if stopping else backoff)
            if stopping and (not self._outstanding or now >= self._deadline):
                return
            wake_at = max(next_flush, retry_at)
            if stopping:
                wake_at = min(retry_at, self._deadline)
            self._wake.wait(max(0.0, wake_at - now))
            self._wake.clear()

    def _flush(self) -> bool:
        """Write what is queued plus what failed before; False when any write failed."""
        with self._lock:
            drained, self._queue = self._queue, deque()
        self._pending.extend(drained)
        groups: dict[tuple[str, date], list[CaptureRecord]] = {}
        for r in self._pending:
            groups.setdefault((r.pipeline, utc_date(r.ts)), []).append(r)
        self._pending = []
        ok = True
        for (pipeline, day), rows in groups.items():
            kept = rows
            try:
                table, kept = self._build(rows)
                if kept:
                    self._write(pipeline, day, table)
            except Exception as e:  # any storage failure: keep the rows, retry later
                ok = False
                self._pending.extend(kept)
                self._failed(e)
                continue
            with self._lock:
                self._outstanding -= len(kept)
                self._written += len(kept)
        if ok and self._failing:
            self._failing = False
            logger.warning("capture writer %s writes to %s again", self.writer_id, self.root_url)
        return ok

    def _failed(self, error: BaseException) -> None:
        self._errors += 1
        if not self._failing:
            self._failing = True
            logger.error(
                "capture writer %s cannot write to %s (%s: %s); keeping %d captures and"
                " retrying (logged once until it recovers)",
                self.writer_id, self.root_url, type(error).__name__, error, self._outstanding,
            )  # fmt: skip

    def _build(self, rows: list[CaptureRecord]) -> tuple[pa.Table, list[CaptureRecord]]:
        """The Arrow table of ``rows``; rows that cannot be converted are rejected."""
        try:
            return to_table(rows), rows
        except _BAD_ROW:
            pass
        good: list[CaptureRecord] = []
        bad: list[tuple[CaptureRecord, Exception]] = []
        for r in rows:
            try:
                to_table([r])
                good.append(r)
            except _BAD_ROW as e:
                bad.append((r, e))
        with self._lock:
            self._outstanding -= len(bad)
            self._rejected += len(bad)
        if bad and not self._warned_rejects:
            self._warned_rejects = True
            example, error = bad[0]
            logger.error(
                "capture writer %s rejected %d captures that cannot be stored, e.g. request %r"
                " of pipeline %r: %s (logged once)",
                self.writer_id, len(bad), example.request_id, example.pipeline, error,
            )  # fmt: skip
        return (to_table(good) if good else CAPTURE_SCHEMA.empty_table()), good

    def _write(self, pipeline: str, day: date, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self._seq += 1
        name = f"{self.writer_id}-{time.time_ns() // 1_000_000}-{self._seq}.parquet"
        key = f"captures/pipeline={pipeline}/date={day.isoformat()}/{name}"
        self._store.put(key, sink.getvalue().to_pybytes())
