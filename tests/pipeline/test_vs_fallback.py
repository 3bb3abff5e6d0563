"""A segment model against the fallback on its own holdout: direction, ties, the row floor."""

from __future__ import annotations

import pytest

from kiln.pipeline.metrics import MIN_JUDGED_ROWS, compare_to_fallback


@pytest.mark.parametrize(
    ("metric", "own", "fallback", "verdict"),
    [
        ("mae", 23.1, 22.4, "worse"),
        ("mae", 22.4, 23.1, "not_worse"),
        ("rmse", 5.0, 5.0, "not_worse"),  # a tie keeps the segment's own model
        ("logloss", 0.7, 0.6, "worse"),
        ("r2", 0.3, 0.4, "worse"),
        ("auc", 0.8, 0.7, "not_worse"),
        ("accuracy", 0.6, 0.61, "worse"),
    ],
)
def test_direction_comes_from_the_metric(
    metric: str, own: float, fallback: float, verdict: str
) -> None:
    assert compare_to_fallback(metric, own, fallback, rows=100).verdict == verdict


def test_reason_names_metric_and_both_values() -> None:
    c = compare_to_fallback("mae", 23.1, 22.4, rows=100)
    assert c.reason == "worse than the fallback on its holdout (mae 23.1 vs 22.4)"


def test_too_few_holdout_rows_or_undefined_metric_are_not_judged() -> None:
    few = compare_to_fallback("mae", 99.0, 1.0, rows=MIN_JUDGED_ROWS - 1)
    assert few.verdict == "not_judged"
    assert few.reason == f"not judged: {MIN_JUDGED_ROWS - 1} holdout rows < {MIN_JUDGED_ROWS}"
    assert compare_to_fallback("mae", 99.0, 1.0, rows=MIN_JUDGED_ROWS).verdict == "worse"
    assert compare_to_fallback("r2", None, 0.5, rows=50).verdict == "not_judged"
