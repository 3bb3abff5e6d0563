"""Drift statistics over binned counts: winter against summer weather, against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

from kiln.pipeline.drift import (
    PSI_EPSILON,
    STATISTICS,
    bin_representatives,
    statistic,
)
from kiln.pipeline.histograms import bin_counts, quantile_edges
from tests.pipeline.weather import weather_column

JAN = (1,)


def binned(name: str, ref_months: tuple[int, ...], cur_months: tuple[int, ...]):  # type: ignore[no-untyped-def]
    ref = weather_column(name, ref_months)
    cur = weather_column(name, cur_months)
    edges = quantile_edges(ref)
    at = bin_representatives(edges, np.nanmin(ref), np.nanmax(ref))
    return bin_counts(ref, edges)[0], bin_counts(cur, edges)[0], at


def test_winter_against_summer_drifts_two_halves_of_january_do_not() -> None:
    ref, july, at = binned("temp", JAN, (7,))
    january = weather_column("temp", JAN)  # the same hours, split in two: no drift
    edges = quantile_edges(january[0::2])
    even, odd = bin_counts(january[0::2], edges)[0], bin_counts(january[1::2], edges)[0]
    for name in STATISTICS:
        same = statistic(name, ref, ref, at=at)
        assert same == pytest.approx(0.0, abs=1e-12), name
        assert statistic(name, ref, july, at=at) > statistic(name, even, odd, at=at) > 0, name
    assert statistic("psi", ref, july) > 5  # July is hotter than every January decile
    assert statistic("psi", even, odd) < 0.01
    assert statistic("jensen_shannon", ref, july) > 0.8  # all of July in the top decile


def test_psi_by_hand_and_its_epsilon_for_empty_bins() -> None:
    ref, cur = np.array([50, 30, 20]), np.array([40, 40, 20])
    r, c = ref / 100, cur / 100
    assert statistic("psi", ref, cur) == pytest.approx(float(np.sum((c - r) * np.log(c / r))))
    empty = statistic("psi", np.array([100, 0]), np.array([50, 50]))
    r2, c2 = np.array([1.0, PSI_EPSILON]), np.array([0.5, 0.5])
    assert empty == pytest.approx(float(np.sum((c2 - r2) * np.log(c2 / r2))))


def test_jensen_shannon_and_ks_are_scipys_on_the_bins() -> None:
    ref, cur, _ = binned("humid", JAN, (4,))
    assert statistic("jensen_shannon", ref, cur) == pytest.approx(
        jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2)
    )
    # With a bin per distinct value, binned KS is the two-sample KS statistic itself.
    a, b = weather_column("visib", JAN), weather_column("visib", (3,))
    edges = np.unique(np.concatenate((a, b)))[1:]
    ks = statistic("ks", bin_counts(a, edges)[0], bin_counts(b, edges)[0])
    assert ks == pytest.approx(ks_2samp(a, b).statistic)


def test_wasserstein_is_scipys_over_the_reference_spread_and_has_no_unit() -> None:
    ref, cur, at = binned("temp", JAN, (4,))
    w = statistic("wasserstein", ref, cur, at=at)
    spread = np.sqrt(np.average((at - np.average(at, weights=ref)) ** 2, weights=ref))
    assert w == pytest.approx(wasserstein_distance(at, at, ref, cur) / spread)
    celsius = statistic("wasserstein", ref, cur, at=(at - 32) / 1.8)
    assert celsius == pytest.approx(w)
    with pytest.raises(ValueError, match="representatives"):
        statistic("wasserstein", ref, cur)


def test_a_stack_of_rows_is_each_row_alone() -> None:
    pairs = [binned(n, JAN, (8,)) for n in ("temp", "dewp", "humid", "pressure")]
    width = min(len(p[0]) for p in pairs)
    ref = np.stack([p[0][:width] for p in pairs])
    cur = np.stack([p[1][:width] for p in pairs])
    at = np.stack([p[2][:width] for p in pairs])
    for name in STATISTICS:
        stacked = statistic(name, ref, cur, at=at)
        alone = [statistic(name, ref[i], cur[i], at=at[i]) for i in range(len(pairs))]
        np.testing.assert_allclose(stacked, alone, rtol=1e-12, err_msg=name)


def test_nothing_to_compare_is_nan_and_bad_input_is_refused() -> None:
    for name in STATISTICS:
        assert np.isnan(statistic(name, np.array([5, 5]), np.array([0, 0]), at=np.array([0, 1])))
    with pytest.raises(ValueError, match="unknown drift statistic 'chi2'"):
        statistic("chi2", np.array([1]), np.array([1]))
    with pytest.raises(ValueError, match="differ"):
        statistic("psi", np.array([1, 2]), np.array([1, 2, 3]))


def test_a_constant_reference_has_no_wasserstein_spread() -> None:
    at = bin_representatives([], 3.0, 3.0)
    assert statistic("wasserstein", np.array([10]), np.array([4]), at=at) == 0.0
