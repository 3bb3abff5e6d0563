"""The target of the same rows in two versions' data: unchanged by an honest retrain, changed by
a scaled or re-labelled target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kiln.pipeline.target_changes import changed_targets


def rows(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "city": rng.choice(["paris", "lyon", "nice"], n),
            "x": rng.normal(size=n),
            "y": rng.gamma(2.0, 10.0, n),
        }
    )


def test_a_retrain_on_more_rows_changes_no_target() -> None:
    old = rows()
    new = pd.concat([old, rows(500, seed=1).assign(id=lambda d: d.id + 10_000)])
    result = changed_targets(old, new.sample(frac=1, random_state=0), "y")
    assert (result.matched, result.changed) == (2000, 0)


def test_a_target_scaled_on_half_the_rows_is_found_with_examples() -> None:
    old = rows()
    new = old.copy()
    new.loc[new.id % 2 == 0, "y"] *= 1.3
    new["id"] = new["id"].astype("float64")  # the same values in another dtype still match
    result = changed_targets(old, new, "y")
    assert result.matched == 2000
    assert result.changed == 1000 and result.share == pytest.approx(0.5)
    first = result.examples[0]
    assert first["after"] == pytest.approx(first["before"] * 1.3)


def test_labels_and_rows_that_cannot_be_matched() -> None:
    old = rows().assign(y=lambda d: np.where(d.y > 20, "high", "low"))
    new = old.assign(y=lambda d: np.where(d.id < 100, "other", d.y))
    assert changed_targets(old, new, "y").changed == 100
    twice = pd.concat([old, old])  # a key that is not unique is left out, never guessed
    assert changed_targets(twice, new, "y").matched == 0
    assert changed_targets(old[["y"]], new[["y"]], "y").matched == 0  # nothing to match on
