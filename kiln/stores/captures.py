"""Public name of the capture store; the implementation lives in :mod:`kiln.stores.capture`."""

from kiln.stores.capture import (
    CAPTURE_SCHEMA,
    STAGES,
    CaptureRecord,
    CaptureWriter,
    query_captures,
    read_captures,
)

__all__ = [
    "CAPTURE_SCHEMA",
    "STAGES",
    "CaptureRecord",
    "CaptureWriter",
    "query_captures",
    "read_captures",
]
