"""A version's live numbers from its captures: what counts as an error of the version."""

from __future__ import annotations

import pyarrow as pa
import pytest

from kiln.monitoring.live import live_stats


def captures(rows: list[tuple[int, str, float | None, str | None, float]]) -> pa.Table:
    version, stage, prediction, error, latency = zip(*rows, strict=True)
    return pa.table(
        {
            "version": pa.array(version, pa.int32()),
            "stage": list(stage),
            "prediction": pa.array(prediction, pa.float64()),
            "error": pa.array(error, pa.string()),
            "latency_ms": list(latency),
        }
    )


def test_refusals_by_the_version_count_malformed_requests_do_not() -> None:
    table = captures(
        [
            (2, "production", 10.0, None, 1.0),
            (2, "production", 12.0, "segment model 'JFK' failed; the fallback answered", 2.0),
            (2, "production", None, "422 invalid_request: features.dep_delay: missing", 3.0),
            (2, "production", None, "500 internal_error: the prediction failed", 4.0),
            (2, "production", None, "400 invalid_json: the body is not JSON", 5.0),
            (2, "production", None, "415 unsupported_media_type: the body must be JSON", 6.0),
            (1, "production", None, "422 invalid_request: x", 7.0),
            (2, "canary", None, "422 invalid_request: x", 8.0),
        ]
    )
    stats = live_stats(table, 2, stage="production")
    assert (stats.requests, stats.errors, stats.model_errors, stats.client_errors) == (4, 2, 1, 2)
    assert stats.error_rate == pytest.approx(0.5)
    assert stats.mean_prediction == pytest.approx(11.0)
    assert stats.p50_ms == pytest.approx(2.5)
    assert live_stats(table, 2).requests == 5  # any stage
    assert live_stats(None, 2).requests == 0


def test_the_status_column_decides_and_the_error_text_is_the_fallback_of_older_files() -> None:
    """A capture's ``status`` says what was refused whatever its error text; a capture of an
    older file (status null) is judged by the text's leading status."""
    table = captures(
        [
            (2, "production", 10.0, None, 1.0),
            (2, "production", None, "request body too large: at most 10000 rows", 2.0),
            (2, "production", None, "the version failed", 3.0),
            (2, "production", None, "400 invalid_json: the body is not JSON", 4.0),
            (2, "production", None, "422 invalid_request: x", 5.0),
        ]
    ).append_column("status", pa.array([200, 413, 500, None, None], pa.int16()))
    stats = live_stats(table, 2)
    assert (stats.requests, stats.errors, stats.client_errors) == (3, 2, 2)
