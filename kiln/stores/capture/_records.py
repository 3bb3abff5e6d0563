"""What one capture is: the record the server builds, and its Arrow/Parquet schema."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

import orjson
import pyarrow as pa

STAGES: Final = frozenset({"production", "canary", "shadow"})
"""Who answered: the production version, the canary (its share of live requests), or a
shadow version (a copy of a production request, its answer not used)."""
PIPELINE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # as PipelineConfig.name
_TS = pa.timestamp("us", tz="UTC")
_BATCH_ROWS = 1_024
"""Rows converted per ``pa.array`` call: each call holds the GIL, which the server needs."""

CAPTURE_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", _TS, nullable=False),
        pa.field("version", pa.int32(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("segment", pa.string()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("fallback", pa.bool_(), nullable=False),
        pa.field("features", pa.string(), nullable=False),
        pa.field("prediction", pa.float64()),
        pa.field("error", pa.string()),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("probabilities", pa.map_(pa.string(), pa.float64())),
        pa.field("unseen", pa.list_(pa.string())),
    ]
)
"""One capture file. The pipeline and the UTC date are its folder names (hive partitions).

``prediction`` is the answer (a multiclass version: the probability of its most probable class,
which is ``label``, and ``probabilities`` maps each class to its probability); ``label`` and
``probabilities`` are null for the other versions. ``unseen`` lists the categorical features
whose value training never saw (empty when none, null for refused requests). Files written
before these three columns existed lack them: readers fill them with null."""


@dataclass(frozen=True, slots=True)
class CaptureRecord:
    """One served request and its answer, as the server saw it. ``ts`` is timezone-aware."""

    request_id: str
    ts: datetime
    pipeline: str
    version: int
    stage: str
    segment: str | None
    model: str
    fallback: bool
    features: dict[str, Any]
    prediction: float | None
    error: str | None
    latency_ms: float
    label: str | None = None
    """A multiclass version's answer: the most probable class."""
    probabilities: dict[str, float] | None = None
    """A multiclass version's probability of each class."""
    unseen: tuple[str, ...] | None = ()

    def __post_init__(self) -> None:
        if self.ts.utcoffset() is None:
            raise ValueError(f"capture {self.request_id!r}: ts must be timezone-aware (UTC)")
        if self.stage not in STAGES:
            raise ValueError(
                f"capture {self.request_id!r}: stage {self.stage!r} is not one of {sorted(STAGES)}"
            )
        if not PIPELINE_NAME.fullmatch(self.pipeline):
            raise ValueError(
                f"capture {self.request_id!r}: invalid pipeline name {self.pipeline!r}"
            )


def _as_utc(ts: datetime) -> datetime:
    """``ts`` in UTC. Arrow is not trusted with offsets: with ``PYARROW_IGNORE_TIMEZONE=1``
    (which ``import pandera`` sets) it stores the wall-clock time and drops the offset."""
    return ts if ts.tzinfo is UTC else ts.astimezone(UTC)


def utc_date(ts: datetime) -> date:
    return _as_utc(ts).date()


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def encode_features(features: dict[str, Any]) -> bytes:
    """A JSON object; values JSON cannot hold (dates, decimals, ...) become strings."""
    try:
        return orjson.dumps(
            features,
            default=_json_default,
            option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY,
        )
    except TypeError:  # e.g. an int beyond 64 bits, which the standard library takes
        return json.dumps(features, default=_json_default).encode()


_PROBABILITIES: Final = pa.map_(pa.string(), pa.float64())


def _pairs(probabilities: dict[str, float] | None) -> list[tuple[str, float]] | None:
    return None if probabilities is None else list(probabilities.items())


def to_table(rows: Sequence[CaptureRecord]) -> pa.Table:
    """The rows as a table of :data:`CAPTURE_SCHEMA`; ValueError or an Arrow error if one is bad."""
    batches = [_to_batch(rows[i : i + _BATCH_ROWS]) for i in range(0, len(rows), _BATCH_ROWS)]
    return pa.Table.from_batches(batches, schema=CAPTURE_SCHEMA)


def _to_batch(rows: Sequence[CaptureRecord]) -> pa.RecordBatch:
    arrays = [
        pa.array([r.request_id for r in rows], pa.string()),
        pa.array([_as_utc(r.ts) for r in rows], _TS),
        pa.array([r.version for r in rows], pa.int32()),
        pa.array([r.stage for r in rows], pa.string()),
        pa.array([r.segment for r in rows], pa.string()),
        pa.array([r.model for r in rows], pa.string()),
        pa.array([r.fallback for r in rows], pa.bool_()),
        pa.array([encode_features(r.features) for r in rows], pa.string()),
        pa.array([r.prediction for r in rows], pa.float64()),
        pa.array([r.error for r in rows], pa.string()),
        pa.array([r.latency_ms for r in rows], pa.float64()),
        pa.array([r.label for r in rows], pa.string()),
        pa.array([_pairs(r.probabilities) for r in rows], _PROBABILITIES),
        pa.array([r.unseen for r in rows], pa.list_(pa.string())),
    ]
    for field, array in zip(CAPTURE_SCHEMA, arrays, strict=True):
        if not field.nullable and array.null_count:
            raise ValueError(f"capture field {field.name!r} is None")
    return pa.RecordBatch.from_arrays(arrays, schema=CAPTURE_SCHEMA)
