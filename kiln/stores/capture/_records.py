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
        pa.field("features", pa.string()),
        pa.field("prediction", pa.float64()),
        pa.field("error", pa.string()),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("probabilities", pa.map_(pa.string(), pa.float64())),
        pa.field("unseen", pa.list_(pa.string())),
        pa.field("status", pa.int16(), nullable=False),
        pa.field("event_ts", _TS),
    ]
)
"""One capture file. The pipeline and the UTC date are its folder names (hive partitions).

``status`` is the HTTP status of the answer: 200 answered (the fallback included), else the
refusal's (400 not JSON, 413 too large, 415 not JSON content, 422 invalid features, 500 the
version failed). ``features`` is the request's features as JSON text when they are not stored
typed (refused requests, records without ``feature_types``), else null: a file of records with
``feature_types`` has one more column, ``inputs``, a struct of that type (see
:func:`capture_schema`), which holds each answered request's features typed.

``prediction`` is the answer (a multiclass version: the probability of its most probable class,
which is ``label``, and ``probabilities`` maps each class to its probability); ``label`` and
``probabilities`` are null for the other versions. ``event_ts`` is when the request's
event happened, as the caller said (``X-Kiln-Event-Time``), never after ``ts``; null when not
said: the monitor's windows are over ``coalesce(event_ts, ts)``. ``unseen`` lists the
categorical features whose value training never saw (empty when none, null for refused
requests). Files written before these columns (and ``status``, ``inputs``) existed lack them:
readers fill them with null; in files written before ``inputs``, ``features`` holds every
request's JSON."""

INPUTS: Final = "inputs"
"""The typed features column: a struct of the version's features (and segment column)."""
INPUTS_KEYS: Final = b"kiln.inputs"
"""Parquet key-value metadata of a file with :data:`INPUTS`: the JSON list of its fields, the
keys each of its typed requests held (a DuckDB union of files of other versions adds more)."""


def capture_schema(feature_types: pa.StructType | None) -> pa.Schema:
    """:data:`CAPTURE_SCHEMA`, plus the typed :data:`INPUTS` column when ``feature_types``."""
    if feature_types is None:
        return CAPTURE_SCHEMA
    keys = orjson.dumps([f.name for f in feature_types])
    return CAPTURE_SCHEMA.append(pa.field(INPUTS, feature_types)).with_metadata({INPUTS_KEYS: keys})


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
    status: int = 200
    """The HTTP status answered: 200, else the refusal's (its text is ``error``)."""
    event_ts: datetime | None = None
    """When the request's event happened, as the caller said (timezone-aware); None: ``ts``."""
    feature_types: pa.StructType | None = None
    """The version's features (and segment column) as Arrow types, shared by its records: an
    answered request (``status`` 200) whose features hold exactly these keys, each of its
    type, is stored typed; any other request's features are stored as JSON text."""

    def __post_init__(self) -> None:
        if self.ts.utcoffset() is None:
            raise ValueError(f"capture {self.request_id!r}: ts must be timezone-aware (UTC)")
        if self.event_ts is not None and self.event_ts.utcoffset() is None:
            raise ValueError(f"capture {self.request_id!r}: event_ts must be timezone-aware")
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


_NOT_TYPED = (pa.ArrowException, TypeError, ValueError, OverflowError)
_PROBABILITIES: Final = pa.map_(pa.string(), pa.float64())


def _pairs(probabilities: dict[str, float] | None) -> list[tuple[str, float]] | None:
    return None if probabilities is None else list(probabilities.items())


def to_table(rows: Sequence[CaptureRecord]) -> pa.Table:
    """The rows as a table of :func:`capture_schema` of their ``feature_types`` (one for all:
    the writer groups them); ValueError or an Arrow error if one is bad."""
    types = rows[0].feature_types if rows else None
    for r in rows:
        if r.feature_types is not types and r.feature_types != types:
            raise ValueError("captures of one table must share their feature_types")
    schema = capture_schema(types)
    batches = [
        _to_batch(rows[i : i + _BATCH_ROWS], types, schema)
        for i in range(0, len(rows), _BATCH_ROWS)
    ]
    return pa.Table.from_batches(batches, schema=schema)


def _typed(
    rows: Sequence[CaptureRecord], types: pa.StructType | None
) -> tuple[pa.Array | None, list[bool]]:
    """The ``inputs`` column of ``rows`` and which rows it holds (the others go as JSON)."""
    if types is None:
        return None, [False] * len(rows)
    names = frozenset(f.name for f in types)
    typed = [r.status == 200 and r.features.keys() == names for r in rows]
    try:
        values = [r.features if t else None for r, t in zip(rows, typed, strict=True)]
        return pa.array(values, types), typed
    except _NOT_TYPED:  # a value of another type: that request is stored as JSON
        pass
    for i, r in enumerate(rows):
        if typed[i]:
            try:
                pa.array([r.features], types)
            except _NOT_TYPED:
                typed[i] = False
    values = [r.features if t else None for r, t in zip(rows, typed, strict=True)]
    return pa.array(values, types), typed


def _to_batch(
    rows: Sequence[CaptureRecord], types: pa.StructType | None, schema: pa.Schema
) -> pa.RecordBatch:
    inputs, typed = _typed(rows, types)
    json_texts = [
        None if t else encode_features(r.features) for r, t in zip(rows, typed, strict=True)
    ]
    arrays = [
        pa.array([r.request_id for r in rows], pa.string()),
        pa.array([_as_utc(r.ts) for r in rows], _TS),
        pa.array([r.version for r in rows], pa.int32()),
        pa.array([r.stage for r in rows], pa.string()),
        pa.array([r.segment for r in rows], pa.string()),
        pa.array([r.model for r in rows], pa.string()),
        pa.array([r.fallback for r in rows], pa.bool_()),
        pa.array(json_texts, pa.string()),
        pa.array([r.prediction for r in rows], pa.float64()),
        pa.array([r.error for r in rows], pa.string()),
        pa.array([r.latency_ms for r in rows], pa.float64()),
        pa.array([r.label for r in rows], pa.string()),
        pa.array([_pairs(r.probabilities) for r in rows], _PROBABILITIES),
        pa.array([r.unseen for r in rows], pa.list_(pa.string())),
        pa.array([r.status for r in rows], pa.int16()),
        pa.array([None if r.event_ts is None else _as_utc(r.event_ts) for r in rows], _TS),
    ]
    if inputs is not None:
        arrays.append(inputs)
    for field, array in zip(schema, arrays, strict=True):
        if not field.nullable and array.null_count:
            raise ValueError(f"capture field {field.name!r} is None")
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
