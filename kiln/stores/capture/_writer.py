"""The capture writer: ``offer`` never blocks the server; a thread writes Parquet in batches.

What ``offer`` returning True means: the capture is in this process's memory, not on storage.
It is written within ``flush_seconds`` (or as soon as ``flush_rows`` are queued), so a process
killed with SIGKILL loses the captures accepted since its last completed write: at most about
``flush_seconds`` of traffic plus the time of one write. ``close`` (SIGTERM) writes them all.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from kiln.errors import StoreError
from kiln.stores.artifacts import FsspecArtifactStore
from kiln.stores.capture._records import CaptureRecord, capture_schema, to_table, utc_date

__all__ = ["CaptureEvents", "CaptureWriter"]

logger = logging.getLogger("kiln.stores.captures")

_WRITER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_BAD_ROW = (pa.ArrowException, TypeError, ValueError, OverflowError)
_ROW_BYTES_GUESS = 512.0
"""Arrow bytes per capture assumed until the first batch is converted."""


class CaptureEvents(Protocol):
    """What the writer thread reports as it goes; the server turns it into metrics."""

    def written(self, pipeline: str, stage: str, rows: int) -> None: ...

    def write_failed(self, pipeline: str) -> None: ...

    def rejected(self, pipeline: str, rows: int) -> None: ...

    def backlog(self, rows: int, nbytes: int) -> None: ...


class _NoEvents:
    def written(self, pipeline: str, stage: str, rows: int) -> None:
        pass

    def write_failed(self, pipeline: str) -> None:
        pass

    def rejected(self, pipeline: str, rows: int) -> None:
        pass

    def backlog(self, rows: int, nbytes: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _Chunk:
    """At most ``flush_rows`` converted captures of one pipeline and day: one file."""

    pipeline: str
    day: date
    table: pa.Table
    stages: tuple[tuple[str, int], ...]
    nbytes: int


class CaptureWriter:
    """Queues captures without blocking and writes them from a background thread.

    ``offer`` holds a lock only to check the bounds and append (no I/O happens under it).
    Accepted captures stay counted in ``queued`` until they are on storage. Each flush converts
    what is queued into Arrow tables of at most ``flush_rows`` rows, one file each: after a
    failed write the tables are kept and retried with a backoff, one file at a time, so
    whatever fits on a nearly full disk is written. While they are kept, new captures are
    dropped once ``max_queue`` captures or ``max_backlog_bytes`` (their Arrow size, estimated
    for those not converted yet) are held. ``written + dropped + rejected + queued`` always
    equals the number of offers; ``rejected`` counts records that cannot be stored at all (a
    field of the wrong type), which the thread logs once and skips rather than retrying forever.
    """

    def __init__(
        self,
        root_url: str,
        *,
        writer_id: str,
        max_queue: int = 100_000,
        flush_rows: int = 5_000,
        flush_seconds: float = 1.0,
        max_backlog_bytes: int = 64 * 1024 * 1024,
        events: CaptureEvents | None = None,
    ) -> None:
        if not _WRITER_ID.fullmatch(writer_id):
            raise ValueError(
                f"invalid capture writer_id {writer_id!r}: expected letters, digits, '_', '.', '-'"
                " (unique per server process, e.g. '<host>-<pid>')"
            )
        if max_queue < 1 or flush_rows < 1 or flush_seconds <= 0 or max_backlog_bytes < 1:
            raise ValueError(
                "max_queue, flush_rows and max_backlog_bytes must be >= 1 and flush_seconds > 0"
            )
        self.root_url = root_url
        self.writer_id = writer_id
        self._store = FsspecArtifactStore(root_url)
        self._max_queue = max_queue
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._max_bytes = max_backlog_bytes
        self._events: CaptureEvents = events or _NoEvents()
        self._lock = threading.Lock()
        self._queue: deque[CaptureRecord] = deque()
        self._outstanding = 0  # accepted, not yet written nor rejected (queue + retry buffer)
        self._pending: list[_Chunk] = []  # writer thread only: converted, not written yet
        self._pending_bytes = 0
        self._converting = 0  # rows drained from the queue and being converted
        self._row_bytes = _ROW_BYTES_GUESS
        self._closed = False
        self._dropped = self._written = self._rejected = self._errors = 0
        self._seq = 0
        self._failing: str | None = None
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
        """Accepted captures not on storage yet (the backlog's rows)."""
        return self._outstanding

    @property
    def backlog_bytes(self) -> int:
        """Arrow size of the backlog: exact for converted captures, estimated for the rest."""
        unconverted = len(self._queue) + self._converting
        return self._pending_bytes + int(unconverted * self._row_bytes)

    @property
    def rejected(self) -> int:
        return self._rejected

    @property
    def errors(self) -> int:
        """Failed file writes so far (their rows were kept and retried)."""
        return self._errors

    @property
    def failing(self) -> str | None:
        """The last write error while writes fail; None once a write succeeds again."""
        return self._failing

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
        """Queue ``record``; False (and ``dropped`` + 1) when the backlog is full or closed."""
        with self._lock:
            queued = len(self._queue)
            unconverted = queued + self._converting
            if (
                self._closed
                or self._outstanding >= self._max_queue
                or self._pending_bytes + unconverted * self._row_bytes >= self._max_bytes
            ):
                self._dropped += 1
                return False
            self._outstanding += 1
            self._queue.append(record)
        if queued + 1 == self._flush_rows:
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
            self._events.backlog(self._outstanding, self.backlog_bytes)
            if stopping and (not self._outstanding or now >= self._deadline):
                return
            wake_at = max(next_flush, retry_at)
            if stopping:
                wake_at = min(retry_at, self._deadline)
            # wake at least every flush interval, so the backlog gauges stay current
            self._wake.wait(min(max(0.0, wake_at - now), self._flush_seconds))
            self._wake.clear()

    def _flush(self) -> bool:
        """Convert what is queued, then write every kept file; False when any write failed."""
        with self._lock:
            drained, self._queue = self._queue, deque()
            self._converting = len(drained)
        try:
            self._convert(drained)
        except Exception:  # not a bad row (those are rejected): keep them queued, retry later
            with self._lock:
                self._queue.extendleft(reversed(drained))
                self._converting = 0
            raise
        kept: list[_Chunk] = []
        for chunk in self._pending:
            try:
                self._write(chunk.pipeline, chunk.day, chunk.table)
            except Exception as e:  # any storage failure: keep the file's rows, retry later
                kept.append(chunk)
                self._events.write_failed(chunk.pipeline)
                self._failed(e)
                continue
            rows = chunk.table.num_rows
            with self._lock:
                self._outstanding -= rows
                self._written += rows
                self._pending_bytes -= chunk.nbytes
            for stage, n in chunk.stages:
                self._events.written(chunk.pipeline, stage, n)
        self._pending = kept
        if not kept and self._failing:
            self._failing = None
            logger.warning("capture writer %s writes to %s again", self.writer_id, self.root_url)
        return not kept

    def _convert(self, drained: deque[CaptureRecord]) -> None:
        """Append ``drained`` to the kept files: Arrow tables of at most ``flush_rows`` rows."""
        groups: dict[tuple[str, date, pa.StructType | None], list[CaptureRecord]] = {}
        for r in drained:  # one file per version's feature types: its typed columns
            groups.setdefault((r.pipeline, utc_date(r.ts), r.feature_types), []).append(r)
        chunks: list[_Chunk] = []
        step = self._flush_rows
        for (pipeline, day, _), rows in groups.items():
            for i in range(0, len(rows), step):
                table, good = self._build(rows[i : i + step])
                if good:
                    stages = tuple(Counter(r.stage for r in good).items())
                    chunks.append(_Chunk(pipeline, day, table, stages, table.nbytes))
        added = sum(c.nbytes for c in chunks)
        with self._lock:
            self._pending_bytes += added
            self._converting = 0
            converted = sum(c.table.num_rows for c in chunks)
            if converted:
                self._row_bytes = added / converted
        self._pending.extend(chunks)

    def _failed(self, error: BaseException) -> None:
        self._errors += 1
        if self._failing is None:
            logger.error(
                "capture writer %s cannot write to %s (%s: %s); keeping %d captures and"
                " retrying (logged once until it recovers)",
                self.writer_id, self.root_url, type(error).__name__, error, self._outstanding,
            )  # fmt: skip
        self._failing = f"{type(error).__name__}: {error}"

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
        for pipeline, n in Counter(r.pipeline for r, _ in bad).items():
            self._events.rejected(pipeline, n)
        if bad and not self._warned_rejects:
            self._warned_rejects = True
            example, error = bad[0]
            logger.error(
                "capture writer %s rejected %d captures that cannot be stored, e.g. request %r"
                " of pipeline %r: %s (logged once)",
                self.writer_id, len(bad), example.request_id, example.pipeline, error,
            )  # fmt: skip
        return (to_table(good) if good else capture_schema(None).empty_table()), good

    def _write(self, pipeline: str, day: date, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self._seq += 1
        name = f"{self.writer_id}-{time.time_ns() // 1_000_000}-{self._seq}.parquet"
        key = f"captures/pipeline={pipeline}/date={day.isoformat()}/{name}"
        self._store.put(key, sink.getvalue().to_pybytes())
