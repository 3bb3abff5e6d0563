"""Live health of one version from its captured requests: volume, errors, latency, answers.

A captured request with no prediction is one the version refused or failed: a missing or
mistyped feature (422: the version's own schema), a crash (5xx). Requests refused whatever the
version (400 not JSON, 413 too large, 415 not JSON content) say nothing about it: they are
counted apart and left out of the error rate. One answered by the fallback because its segment
model failed is a model error but still an answer. The shadow gate, the canary check and the
automatic rollback all judge a version by these numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["NOT_THE_VERSION", "LiveStats", "live_stats"]


NOT_THE_VERSION = (400, 413, 415)
"""Refusals of the request itself, whatever version serves (the capture's HTTP ``status``;
in files written before that column, the error text, which starts with it)."""


@dataclass(frozen=True)
class LiveStats:
    requests: int
    errors: int
    model_errors: int
    p50_ms: float | None
    p99_ms: float | None
    mean_prediction: float | None
    client_errors: int = 0
    """Malformed requests (400, 413, 415): not counted in ``requests`` or ``errors``."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_evidence(self) -> dict[str, Any]:
        return asdict(self) | {"error_rate": round(self.error_rate, 6)}


def live_stats(captures: pa.Table | None, version: int, *, stage: str | None = None) -> LiveStats:
    """The numbers of ``version`` (and ``stage``, when given) in ``captures``."""
    if captures is None or captures.num_rows == 0:
        return LiveStats(0, 0, 0, None, None, None)
    keep = pc.equal(captures["version"], version)
    if stage is not None:
        keep = pc.and_(keep, pc.equal(captures["stage"], stage))
    rows = captures.filter(keep)
    malformed = _malformed(rows)
    client_errors = int(pc.sum(malformed).as_py() or 0)
    rows = rows.filter(pc.invert(malformed))
    n = rows.num_rows
    if n == 0:
        return LiveStats(0, 0, 0, None, None, None, client_errors)
    prediction = rows["prediction"].to_numpy(zero_copy_only=False).astype(np.float64)
    failed = np.isnan(prediction)
    error_col = rows["error"].is_valid().to_numpy(zero_copy_only=False)
    latency = rows["latency_ms"].to_numpy(zero_copy_only=False).astype(np.float64)
    answered = prediction[~failed]
    return LiveStats(
        requests=n,
        errors=int(failed.sum()),
        model_errors=int((error_col & ~failed).sum()),
        p50_ms=float(np.percentile(latency, 50)),
        p99_ms=float(np.percentile(latency, 99)),
        mean_prediction=float(answered.mean()) if answered.size else None,
        client_errors=client_errors,
    )


def _malformed(rows: pa.Table) -> Any:
    """Which captures are refusals of the request itself: by ``status``, else (older files,
    status null) by the error text's leading status."""
    by_text = pc.starts_with(rows["error"], f"{NOT_THE_VERSION[0]} ")
    for status in NOT_THE_VERSION[1:]:
        by_text = pc.or_(by_text, pc.starts_with(rows["error"], f"{status} "))
    if "status" not in rows.column_names:
        return pc.fill_null(by_text, False)
    status = rows["status"]
    by_status = pc.is_in(status, pa.array(NOT_THE_VERSION, status.type))
    return pc.fill_null(pc.if_else(pc.is_valid(status), by_status, by_text), False)
