"""Per-segment comparison of a candidate with its champion on the same rows: paired bootstrap
intervals on synthetic predictions, where the truth of each case is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from kiln.pipeline.compare import (
    _BATCHED,
    _average_ranks,
    compare_segments,
    relative_change,
)
from kiln.pipeline.metrics import score

TOL = 0.02


def judge(metric: str, y, cand, champ, groups, **kw):  # type: ignore[no-untyped-def]
    options = {"tolerance": TOL, "min_rows": 5, "confidence": 0.9, "resamples": 1000} | kw
    return compare_segments(metric, y, cand, champ, groups, **options)


def segment(rng: np.random.Generator, n: int, worse: float, noise: float = 0.3):  # type: ignore[no-untyped-def]
    """``n`` rows: the champion's errors e, the candidate's ``worse`` x |e| with multiplicative
    noise of mean 1 (so the candidate's MAE is about ``worse`` x the champion's)."""
    y = rng.normal(20, 10, n)
    e = rng.normal(0, 5, n)
    scale = worse * rng.uniform(1 - noise, 1 + noise, n)
    return y, y + e * scale, y + e


def test_a_12_row_segment_slightly_worse_is_inconclusive_not_failing() -> None:
    y, cand, champ = segment(np.random.default_rng(3), 12, worse=1.10, noise=0.8)
    s = judge("mae", y, cand, champ, {"SFO": np.arange(12)})["SFO"]
    assert s.change is not None and s.change > TOL  # a point comparison would block it
    assert s.interval is not None
    lo, hi = s.interval
    assert lo < TOL < hi
    assert s.verdict == "inconclusive"


def test_a_12_row_segment_with_three_times_the_error_fails() -> None:
    y, cand, champ = segment(np.random.default_rng(4), 12, worse=3.0)
    s = judge("mae", y, cand, champ, {"SFO": np.arange(12)})["SFO"]
    assert s.interval is not None and s.interval[0] > TOL
    assert s.change == pytest.approx(2.0, abs=0.3)
    assert s.verdict == "regressed"


def test_a_large_segment_5_percent_worse_fails_at_a_2_percent_tolerance() -> None:
    y, cand, champ = segment(np.random.default_rng(5), 20_000, worse=1.05)
    s = judge("mae", y, cand, champ, {"big": np.arange(20_000)})["big"]
    assert s.change == pytest.approx(0.05, abs=0.01)
    assert s.interval is not None and TOL < s.interval[0] < s.change < s.interval[1]
    assert s.verdict == "regressed"


def test_a_large_segment_within_tolerance_is_ok() -> None:
    y, cand, champ = segment(np.random.default_rng(6), 20_000, worse=0.99)
    assert judge("mae", y, cand, champ, {"big": np.arange(20_000)})["big"].verdict == "ok"


def test_the_issue_scenario_31_percent_better_with_two_noisy_small_cities_passes() -> None:
    """A monthly per-city pipeline: 12 holdout rows per city. The candidate is ~30% better
    overall; two cities score worse by noise (the old point rule at min_rows 6 blocked it)."""
    rng = np.random.default_rng(7)
    parts = [segment(rng, 12, worse=0.55, noise=0.5) for _ in range(10)]
    parts += [segment(rng, 12, worse=1.15, noise=0.9) for _ in range(2)]
    y, cand, champ = (np.concatenate([p[i] for p in parts]) for i in range(3))
    groups = {f"city{k:02d}": np.arange(12 * k, 12 * (k + 1)) for k in range(12)}

    overall = relative_change(
        score(["mae"], y, cand)["mae"], score(["mae"], y, champ)["mae"], higher=False
    )
    assert overall is not None and overall < -0.25
    result = judge("mae", y, cand, champ, groups)
    noisy = [result["city10"], result["city11"]]
    assert all(s.change is not None and s.change > TOL for s in noisy)  # the old rule: blocked
    assert [s.verdict for s in noisy] == ["inconclusive", "inconclusive"]
    assert not [k for k, s in result.items() if s.verdict == "regressed"]


def test_higher_is_better_metrics_orient_the_change() -> None:
    rng = np.random.default_rng(8)
    y = (rng.random(1000) < 0.4).astype(float)
    good = np.clip(0.5 * y + 0.5 * rng.random(1000), 0, 1)
    bad = rng.random(1000)
    s = judge("auc", y, bad, good, {"all": np.arange(1000)})["all"]
    assert s.candidate is not None and s.champion is not None and s.candidate < s.champion
    assert s.change is not None and s.change > 0.2 and s.verdict == "regressed"
    s = judge("auc", y, good, bad, {"all": np.arange(1000)})["all"]
    assert s.change is not None and s.change < 0 and s.verdict == "ok"


def test_small_or_undefined_segments_are_shown_not_judged() -> None:
    y, cand, champ = segment(np.random.default_rng(9), 4, worse=5.0)
    s = judge("mae", y, cand, champ, {"tiny": np.arange(4)})["tiny"]
    assert (s.rows, s.verdict, s.interval) == (4, "not judged", None)
    assert s.change is not None and s.change > 1  # shown
    constant = np.full(8, 3.0)
    s = judge("r2", constant, constant + 1, constant - 1, {"flat": np.arange(8)})["flat"]
    assert (s.change, s.verdict) == (None, "not judged")


def test_intervals_are_deterministic_and_per_segment() -> None:
    rng = np.random.default_rng(10)
    y, cand, champ = segment(rng, 40, worse=1.1)
    one = judge("rmse", y, cand, champ, {"a": np.arange(20)})
    two = judge("rmse", y, cand, champ, {"b": np.arange(20, 40), "a": np.arange(20)})
    assert one["a"] == two["a"]


@pytest.mark.parametrize("metric", sorted(_BATCHED))
def test_batched_metrics_equal_the_reference_metrics(metric: str) -> None:
    rng = np.random.default_rng(11)
    if metric in ("auc", "logloss", "accuracy"):
        y = (rng.random((6, 50)) < 0.3).astype(float)
        p = np.round(rng.random((6, 50)), 1)  # ties, for the ranks
    else:
        y, p = rng.normal(size=(6, 50)), rng.normal(size=(6, 50))
    batched = _BATCHED[metric](y, p)
    for i in range(6):
        assert batched[i] == pytest.approx(score([metric], y[i], p[i])[metric])


def test_average_ranks_match_scipy() -> None:
    p = np.round(np.random.default_rng(12).normal(size=(30, 17)), 1)
    np.testing.assert_allclose(_average_ranks(p), rankdata(p, axis=1))
