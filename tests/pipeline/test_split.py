"""The holdout split: time, seeded random and key hash; recomputable from its lineage record."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from kiln.config.models import PipelineConfig
from kiln.pipeline.split import HASH_BUCKETS, Split, hash_buckets, holdout_mask, resolve_split


def config(split: dict[str, Any] | None = None, **data: Any) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": "p",
            "owner": "o",
            "data": {"source": "x.parquet", **data},
            "target": "y",
            "features": ["a"],
            "model": {"estimator": "sklearn.linear_model.LinearRegression"},
            "evaluation": {"split": split or {}},
        }
    )


def rows(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "customer_id": rng.integers(0, 300, n),
            "t": pd.date_range("2024-01-01", periods=n, freq="h"),
            "a": rng.normal(size=n),
        }
    )


def test_without_time_column_the_default_is_a_seeded_random_split() -> None:
    cfg = config()
    df = rows()
    split = resolve_split(df, cfg)
    assert (split.kind, split.seed, split.fraction, split.defaulted) == ("random", 0, 0.2, True)
    mask = holdout_mask(df, split)
    assert 150 <= mask.sum() <= 250  # about a fifth, drawn by the seed
    np.testing.assert_array_equal(
        mask, holdout_mask(df, Split.from_lineage({"split": split.to_dict()}))
    )
    other = holdout_mask(df, resolve_split(df, config({"kind": "random", "seed": 1})))
    assert 150 <= other.sum() <= 250 and not np.array_equal(mask, other)


def test_random_split_keeps_each_row_on_its_side_when_rows_are_appended_or_reordered() -> None:
    """A retrain on more rows must not move the champion's training rows into the holdout it
    is scored on: the side of a row depends on its content and the seed, not its position."""
    cfg = config({"kind": "random", "seed": 3})
    df = rows(1000)
    mask = holdout_mask(df, resolve_split(df, cfg))
    more = pd.concat([rows(1300).iloc[1000:], df], ignore_index=True)  # new rows first
    shuffled = more.sample(frac=1, random_state=5)
    again = pd.Series(holdout_mask(shuffled, resolve_split(shuffled, cfg)), index=shuffled.index)
    np.testing.assert_array_equal(again.sort_index().to_numpy()[300:], mask)
    twice = pd.concat([df, df], ignore_index=True)  # a duplicated row is never split
    both = holdout_mask(twice, resolve_split(twice, cfg))
    np.testing.assert_array_equal(both[:1000], both[1000:])


def test_with_a_time_column_the_default_stays_the_time_split() -> None:
    cfg = config({"holdout_fraction": 0.1}, time_column="t")  # the old shape: still a time split
    df = rows().sample(frac=1, random_state=0).reset_index(drop=True)
    split = resolve_split(df, cfg)
    assert split.kind == "time" and not split.defaulted
    mask = holdout_mask(df, split)
    assert df.t[~mask].max() < df.t[mask].min()
    record = Split.from_lineage({"split": split.to_dict()})
    np.testing.assert_array_equal(mask, holdout_mask(df, record))


def test_a_lineage_from_before_split_records_reads_as_its_time_split() -> None:
    df = rows()
    legacy = {"time_column": "t", "holdout_start": "2024-02-01T00:00:00"}
    mask = holdout_mask(df, Split.from_lineage(legacy))
    np.testing.assert_array_equal(mask, (df.t >= "2024-02-01").to_numpy())


def test_hash_split_keeps_every_key_on_one_side_and_is_stable_when_rows_are_appended() -> None:
    cfg = config({"kind": "hash", "key": "customer_id", "holdout_fraction": 0.25})
    df = rows()
    split = resolve_split(df, cfg)
    mask = holdout_mask(df, split)
    per_key = pd.Series(mask).groupby(df.customer_id).nunique()
    assert (per_key == 1).all()  # a customer is never on both sides
    assert 0.15 < mask.mean() < 0.35
    more = pd.concat([df, rows(500).assign(customer_id=lambda d: d.customer_id + 150)])
    more_mask = holdout_mask(more.reset_index(drop=True), split)
    np.testing.assert_array_equal(more_mask[: len(df)], mask)
    held = set(df.customer_id[mask])
    new_rows = more.iloc[len(df) :]
    assert set(new_rows.customer_id[more_mask[len(df) :]]) >= held & set(new_rows.customer_id)


def test_hash_buckets_do_not_depend_on_dtype_or_process() -> None:
    ints = hash_buckets(pd.Series([42, 7, 42]))
    floats = hash_buckets(pd.Series([42.0, 7.0, None]))
    strings = hash_buckets(pd.Series(["42", "7", "42"]))
    assert ints[0] == ints[2] == floats[0] == strings[0]
    assert ints[1] == floats[1] == strings[1]
    # blake2b-64 of "42": fixed, unlike Python's salted hash()
    import hashlib

    expected = int.from_bytes(hashlib.blake2b(b"42", digest_size=8).digest(), "big")
    assert ints[0] == expected % HASH_BUCKETS


@pytest.mark.parametrize(
    ("split", "data", "message"),
    [
        ({"kind": "time"}, {}, "a time split needs data.time_column"),
        ({"holdout_start": "2024-01-01"}, {}, "a time split needs data.time_column"),
        ({"kind": "hash"}, {}, "kind hash needs `key`"),
        ({"kind": "random", "key": "c"}, {}, "key goes with kind hash"),
        ({"seed": 3}, {"time_column": "t"}, "seed goes with kind random"),
    ],
)
def test_incoherent_splits_are_config_errors(
    split: dict[str, Any], data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        config(split, **data)


def test_freshness_without_time_column_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"checks\.freshness: freshness reads data.time"):
        PipelineConfig.model_validate(
            config().model_dump(exclude_none=True) | {"checks": {"freshness": {"max_age": "1d"}}}
        )
