"""The capture store: samples of served requests and responses, as Parquet files on fsspec.

The prediction server hands each sampled request to :meth:`CaptureWriter.offer`, which never
blocks on I/O: it appends to an in-memory queue, or drops the capture (never the request) when
the backlog is full (``max_queue`` rows or ``max_backlog_bytes``). A background thread writes
the queue every ``flush_seconds`` (or ``flush_rows`` captures), in Parquet files of at most
``flush_rows`` rows per (pipeline, UTC date); files that fail are kept and retried one by one::

    <root>/captures/pipeline=<name>/date=<YYYY-MM-DD>/<writer_id>-<unix_ms>-<seq>.parquet

Local files appear atomically (temporary name, then rename); other fsspec URLs are written as
one whole object. :func:`read_captures` (the replay gate's last K requests) and
:func:`query_captures` (any SQL over a view ``captures``) read them with DuckDB;
:func:`open_window` is one monitoring window of a pipeline, as a view the monitor aggregates.
"""

from kiln.stores.capture._reader import query_captures, read_captures
from kiln.stores.capture._records import CAPTURE_SCHEMA, STAGES, CaptureRecord
from kiln.stores.capture._window import CaptureWindow, open_window
from kiln.stores.capture._writer import CaptureEvents, CaptureWriter

__all__ = [
    "CAPTURE_SCHEMA",
    "STAGES",
    "CaptureEvents",
    "CaptureRecord",
    "CaptureWindow",
    "CaptureWriter",
    "open_window",
    "query_captures",
    "read_captures",
]
