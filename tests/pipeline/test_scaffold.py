"""`kiln init --from`: what is inferred from a sample of rows, and that the written kiln.yaml
loads as written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kiln.config.loader import parse_config
from kiln.errors import SchemaError
from kiln.pipeline.scaffold import infer_pipeline, render_yaml


def _frame(n: int = 600, *, with_time: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "order_id": np.arange(n),
            "shop": rng.choice(["north", "south", "east"], n),
            "basket": rng.integers(1, 20, n),
            "price": rng.normal(50, 10, n).round(2),
            "country": "FR",
            "ref": [f"r{i}" for i in range(n)],
            "amount": rng.normal(100, 30, n),
        }
    )
    if with_time:
        df["ordered_at"] = pd.date_range("2024-01-01", periods=n, freq="h")
    return df


def test_infers_features_time_and_leaves_out_ids_and_constants() -> None:
    got = infer_pipeline(_frame(), target="amount", segment="shop")
    assert got.task == "regression" and got.time_column == "ordered_at"
    assert [c.name for c in got.features] == ["basket", "price"]
    notes = {c.name: c.note for c in got.left_out}
    assert set(notes) == {"order_id", "country", "ref"}
    assert "id" in notes["order_id"] and "one value" in notes["country"]
    assert got.segment_values == 3 and got.segments_reaching_min_rows == 3
    assert got.min_rows == 20


def test_classification_for_a_two_valued_target_and_refusals() -> None:
    df = _frame()
    df["late"] = (df["amount"] > 100).astype(int)
    assert infer_pipeline(df, target="late").task == "classification"
    with pytest.raises(SchemaError, match=r"'nope' is not a column.*amount"):
        infer_pipeline(df, target="nope")
    with pytest.raises(SchemaError, match=r"target 'shop'.*0/1 label"):
        infer_pipeline(df, target="shop")
    with pytest.raises(SchemaError, match="--segment 'zone'"):
        infer_pipeline(df, target="amount", segment="zone")


def test_several_timestamps_need_a_choice() -> None:
    df = _frame()
    df["shipped_at"] = df["ordered_at"] + pd.Timedelta("1D")
    got = infer_pipeline(df, target="amount")
    assert got.time_column is None
    assert "--time-column" in {c.name: c.note for c in got.left_out}["shipped_at"]
    chosen = infer_pipeline(df, target="amount", time_column="shipped_at")
    assert chosen.time_column == "shipped_at"
    assert "ordered_at" in {c.name for c in chosen.left_out}


def test_rendered_yaml_loads_and_says_why(tmp_path: Path) -> None:
    got = infer_pipeline(_frame(), target="amount", segment="shop")
    text = render_yaml(
        got, name="shop-orders", owner="me@example.com", source="orders.csv", query=None,
        described="orders.csv",
    )  # fmt: skip
    cfg = parse_config(text, tmp_path / "kiln.yaml").config
    assert cfg.features == ["basket", "price"] and cfg.segments is not None
    assert cfg.data.time_column == "ordered_at" and cfg.segments.column == "shop"
    assert cfg.model.estimator == "lightgbm.LGBMRegressor" and cfg.primary_metric == "mae"
    assert "#   order_id: unique per row" in text
    assert yaml.safe_load(text)["checks"]["min_rows"] == 60


def test_column_names_that_need_quoting(tmp_path: Path) -> None:
    df = _frame().rename(columns={"basket": "yes", "price": "unit price"})
    text = render_yaml(
        infer_pipeline(df, target="amount"), name="q", owner="me", source="x.csv", query=None,
        described="x.csv",
    )  # fmt: skip
    features = parse_config(text, tmp_path / "kiln.yaml").config.features
    assert features == ["shop", "yes", "unit price"]
