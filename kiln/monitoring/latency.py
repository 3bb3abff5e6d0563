"""Latency and errors of one monitor window, per version and segment, aggregated in DuckDB.

A request is an error when the version did not answer it (HTTP ``status`` other than 200: refused
as invalid for it, or failed); in capture files written before the ``status`` column, when its
``error`` text is set. Requests refused before any version saw them (not JSON, too large, a bad
header: :data:`~kiln.monitoring.live.NOT_THE_VERSION`) are a client's fault, not the version's:
they count neither as its requests nor as its errors, as in the drift figures.
Latency percentiles are DuckDB's ``quantile_cont`` (linear interpolation, as numpy's default)
over every captured request of the window, errors included: a slow refusal is slow too.
"""

from __future__ import annotations

from kiln.monitoring.findings import ALL, LatencyRow
from kiln.monitoring.live import NOT_THE_VERSION
from kiln.stores.capture import CaptureWindow

__all__ = ["NO_SEGMENT", "window_latency"]

NO_SEGMENT = "__none__"
"""The segment name of requests that carried no segment value."""

_SQL = f"""
SELECT
    version,
    CASE WHEN grouping(segment) = 1 THEN '{ALL}' ELSE coalesce(segment, '{NO_SEGMENT}') END
        AS segment,
    count(*) AS requests,
    count(*) FILTER (WHERE {{failed}}) AS errors,
    quantile_cont(latency_ms, 0.5) AS p50_ms,
    quantile_cont(latency_ms, 0.95) AS p95_ms,
    quantile_cont(latency_ms, 0.99) AS p99_ms
FROM captures
WHERE status IS NULL OR status NOT IN ({{not_the_version}})
GROUP BY GROUPING SETS ((version, segment), (version))
ORDER BY version, segment
"""


def window_latency(window: CaptureWindow) -> list[LatencyRow]:
    """Requests, errors, error rate and p50/p95/p99 latency (ms) of every (version, segment)
    of the window, and of every version over all its segments (segment :data:`ALL`)."""
    if window.empty:
        return []
    failed = "coalesce(status <> 200, error IS NOT NULL)"
    sql = _SQL.format(failed=failed, not_the_version=", ".join(map(str, NOT_THE_VERSION)))
    rows = window.query(sql).to_pylist()
    return [
        LatencyRow(
            version=int(r["version"]),
            segment=str(r["segment"]),
            requests=int(r["requests"]),
            errors=int(r["errors"]),
            error_rate=r["errors"] / r["requests"] if r["requests"] else 0.0,
            p50_ms=r["p50_ms"],
            p95_ms=r["p95_ms"],
            p99_ms=r["p99_ms"],
        )
        for r in rows
    ]
