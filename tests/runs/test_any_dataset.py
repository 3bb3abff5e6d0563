"""A dataset without a time column trains and registers with a random or a hash split, and the
held-out rows are never trained on; the gates read back exactly the run's holdout."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kiln.config import LoadedConfig, load_config
from kiln.pipeline.plan import FALLBACK
from kiln.registry.version import Version
from kiln.runs import Runner
from kiln.runs.data import prepare
from kiln.runs.train_step import task_rows
from kiln.stores import Stores


def customers(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Synthetic churn-like rows: no timestamp anywhere."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 600, n),
            "region": rng.choice(["north", "south", "west"], n),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "tenure": rng.integers(1, 60, n).astype(float),
            "usage": rng.gamma(2.0, 10.0, n),
        }
    )
    df["spend"] = 3 * df.usage + 0.5 * df.tenure + rng.normal(0, 5, n)
    return df


def write(tmp_path: Path, split: dict[str, Any], **extra: Any) -> LoadedConfig:
    data = tmp_path / "customers.parquet"
    if not data.exists():
        customers().to_parquet(data)
    cfg: dict[str, Any] = {
        "name": "spend",
        "owner": "tests@example.com",
        "data": {"source": str(data)},
        "target": "spend",
        "features": ["plan", "tenure", "usage"],
        "segments": {"column": "region", "min_rows": 100},
        "model": {"estimator": "lightgbm.LGBMRegressor", "params": {"n_estimators": 10}},
        "evaluation": {"split": split, "metrics": ["mae", "rmse"]},
        "resources": {"cpus": 2},
        **extra,
    }
    path = tmp_path / "kiln.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_config(path)


def in_holdout_by_hash(keys: pd.Series, fraction: float) -> np.ndarray:
    """The documented rule, written out independently of Kiln."""
    bucket = [
        int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8).digest(), "big") % 10_000
        for k in keys
    ]
    return np.array(bucket) < fraction * 10_000


def assert_no_leakage(loaded: LoadedConfig, df: pd.DataFrame) -> np.ndarray:
    prep = prepare(df, loaded)
    train_idx, hold_idx = task_rows(prep)
    assert set(train_idx) == set(hold_idx) == {"north", "south", "west", FALLBACK}
    for key in train_idx:
        assert not set(train_idx[key]) & set(hold_idx[key])
        assert not prep.holdout[train_idx[key]].any()
        assert prep.holdout[hold_idx[key]].all()
    assert set(train_idx[FALLBACK]) | set(hold_idx[FALLBACK]) == set(range(len(df)))
    return prep.holdout


@pytest.mark.parametrize(
    "split",
    [
        {},
        {"kind": "random", "holdout_fraction": 0.25, "seed": 7},
        {"kind": "hash", "key": "customer_id"},
    ],
    ids=["default", "random", "hash"],
)
def test_dataset_without_time_column_trains_and_registers(
    split: dict[str, Any], tmp_path: Path, runner: Runner, stores: Stores
) -> None:
    loaded = write(tmp_path, split)
    df = customers()
    hold = assert_no_leakage(loaded, df)
    if split.get("kind") == "hash":
        np.testing.assert_array_equal(hold, in_holdout_by_hash(df.customer_id, 0.2))
    else:  # about the fraction, drawn by the seed from each row's content
        assert abs(hold.mean() - split.get("holdout_fraction", 0.2)) < 0.03

    result = runner.run(loaded)

    lineage = result.manifest["lineage"]
    assert lineage["time_column"] is None and lineage["holdout_start"] is None
    assert lineage["split"]["kind"] == (split.get("kind") or "random")
    assert lineage["rows"]["holdout"] == hold.sum()
    fb = result.manifest["fallback"]
    assert (fb["rows_train"], fb["rows_holdout"]) == ((~hold).sum(), hold.sum())
    for seg, ref in result.manifest["models"].items():
        in_seg = (df.region == seg).to_numpy()
        assert ref["rows_holdout"] == (in_seg & hold).sum()
        assert ref["rows_train"] == (in_seg & ~hold).sum()
    # the gates score a version on the rows its run held out, recomputed from its lineage
    with stores.metadata.unit_of_work() as uow:
        record = uow.versions.get("spend", result.version)
    gate_rows = Version(stores, record).holdout
    pd.testing.assert_frame_equal(gate_rows, df.loc[hold].reset_index(drop=True))


def test_a_time_split_without_time_column_names_the_field(tmp_path: Path) -> None:
    from kiln.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        write(tmp_path, {"kind": "time"})
    problems = "\n".join(info.value.problems)
    assert "kiln.yaml:19:11: evaluation.split.kind: a time split needs" in problems
