"""A segment whose model loses to the fallback on its own holdout: warned about and marked in
the run's table, or (``segments.route_worse_to_fallback``) served by the fallback, with the
reason."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from rich.console import Console

from kiln.config import LoadedConfig, load_config
from kiln.console import segment_table
from kiln.pipeline.metrics import score
from kiln.registry.predictor import Predictor
from kiln.runs import Runner
from kiln.runs.data import prepare
from kiln.stores import Stores

# The model of segment "west" answers a constant: far worse than the fallback on its rows.
TRAIN_PY = """
import numpy as np
from sklearn.linear_model import LinearRegression


class Constant:
    def predict(self, X):
        return np.zeros(len(X))


def train(X, y, context):
    return Constant() if context.segment == "west" else LinearRegression().fit(X, y)
"""


def rows(n: int = 1200) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "region": rng.choice(["north", "south", "west"], n),
            "tenure": rng.integers(1, 60, n).astype(float),
            "usage": rng.gamma(2.0, 10.0, n),
        }
    )
    # each region its own line, which the global fallback cannot fit
    base = df.region.map({"north": 100.0, "south": 300.0, "west": 200.0})
    slope = df.region.map({"north": 3.0, "south": -2.0, "west": 1.0})
    df["spend"] = base + slope * df.usage + 0.5 * df.tenure + rng.normal(0, 5, n)
    return df


def write(tmp_path: Path, name: str, **segments: Any) -> LoadedConfig:
    (tmp_path / "train.py").write_text(TRAIN_PY)
    rows().to_parquet(tmp_path / "rows.parquet")
    cfg = {
        "name": name,
        "owner": "tests@example.com",
        "data": {"source": str(tmp_path / "rows.parquet")},
        "target": "spend",
        "features": ["tenure", "usage"],
        "segments": {"column": "region", "min_rows": 50, **segments},
        "model": {"train": "train:train"},
        "evaluation": {"metrics": ["mae", "rmse"]},
        "resources": {"cpus": 2},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_config(path)


def rendered(manifest: dict[str, Any]) -> str:
    console = Console(record=True, width=250)
    console.print(segment_table(manifest, "t"))
    return console.export_text()


def test_worse_segment_is_warned_about_and_marked_by_default(
    tmp_path: Path, runner: Runner
) -> None:
    result = runner.run(write(tmp_path, "warned"))
    m = result.manifest
    assert set(m["models"]) == {"north", "south", "west"}
    assert m["models"]["west"]["vs_fallback"]["verdict"] == "worse"
    assert m["models"]["north"]["vs_fallback"]["verdict"] == "not_worse"
    assert m["routed_to_fallback"] == {}
    assert len(result.warnings) == 1
    assert re.match(
        r"segment 'west': its model is worse than the fallback on its holdout \(mae [\d.]+ vs "
        r"[\d.]+\); it serves anyway",
        result.warnings[0],
    )
    west_line = next(
        line for line in rendered(m).splitlines() if line.strip("│ ").startswith("west")
    )
    assert "worse than fallback" in west_line


def test_route_worse_to_fallback_serves_it_by_the_fallback(
    tmp_path: Path, runner: Runner, stores: Stores
) -> None:
    loaded = write(tmp_path, "routed", route_worse_to_fallback=True)
    result = runner.run(loaded)
    m = result.manifest
    assert set(m["models"]) == {"north", "south"}
    west = m["routed_to_fallback"]["west"]
    assert re.fullmatch(
        r"worse than the fallback on its holdout \(mae [\d.]+ vs [\d.]+\)", west["reason"]
    )
    assert west["own_metrics"]["mae"] > west["fallback_metrics"]["mae"]
    assert "served by the fallback" in result.warnings[0]
    # the routed overall metric counts the fallback's answers on the west rows
    prep = prepare(rows(), loaded)
    hold = prep.frame.loc[prep.holdout]
    predictor = Predictor.load(stores.content, result.manifest_digest, label="routed")
    served = predictor.predict(hold)
    assert served.fallback[(hold.region == "west").to_numpy()].all()
    assert not served.fallback[(hold.region != "west").to_numpy()].any()
    expected = score(["mae"], prep.y[prep.holdout], served.values)["mae"]
    assert m["metrics"]["overall"]["mae"] == expected
    assert m["metrics"]["overall"]["mae"] < 40  # the constant model would make it ~100
    assert "worse than the fallback on its holdout" in rendered(m)
