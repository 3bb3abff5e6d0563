"""Live health of one version from its captured requests: volume, errors, latency, answers.

A captured request with no prediction is one the version refused or failed (bad request,
missing feature, a crash); one answered by the fallback because its segment model failed is a
model error but still an answer. The shadow gate, the canary check and the automatic rollback
all judge a version by these numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["LiveStats", "live_stats"]


@dataclass(frozen=True)
class LiveStats:
    requests: int
    errors: int
    model_errors: int
    p50_ms: float | None
    p99_ms: float | None
    mean_prediction: float | None

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
    n = rows.num_rows
    if n == 0:
        return LiveStats(0, 0, 0, None, None, None)
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
    )
