"""evaluation.refit: the served models are refit on train + holdout rows after evaluation; the
package's metrics stay those of the first fit on the holdout, and say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.linear_model import LinearRegression

from kiln.config import load_config
from kiln.pipeline.metrics import score
from kiln.registry.predictor import Predictor
from kiln.runs import Runner
from kiln.runs.data import prepare
from kiln.stores import Stores


def rows(n: int = 900) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    df = pd.DataFrame(
        {
            "day": pd.date_range("2024-01-01", periods=n, freq="h"),
            "region": rng.choice(["north", "south"], n),
            "usage": rng.gamma(2.0, 10.0, n),
        }
    )
    # the relation drifts over time: the newest (held-out) rows teach the refit something
    df["spend"] = 50 + (2 + np.arange(n) / n) * df.usage + rng.normal(0, 3, n)
    return df


def test_refit_serves_a_model_fit_on_all_rows_and_keeps_the_holdout_metrics(
    tmp_path: Path, runner: Runner, stores: Stores
) -> None:
    df = rows()
    df.to_parquet(tmp_path / "rows.parquet")
    cfg = {
        "name": "refit",
        "owner": "tests@example.com",
        "data": {"source": str(tmp_path / "rows.parquet"), "time_column": "day"},
        "target": "spend",
        "features": ["usage"],
        "segments": {"column": "region", "min_rows": 50},
        "model": {"estimator": "sklearn.linear_model.LinearRegression"},
        "evaluation": {"split": {"holdout_fraction": 0.25}, "metrics": ["mae"], "refit": True},
        "resources": {"cpus": 2},
    }
    (tmp_path / "kiln.yaml").write_text(yaml.safe_dump(cfg))
    loaded = load_config(tmp_path / "kiln.yaml")
    result = runner.run(loaded)
    m = result.manifest
    assert m["lineage"]["refit"] is True
    assert m["evaluation"]["refit"] is True and m["evaluation"]["served_model_saw_holdout"]

    prep = prepare(df, loaded)
    predictor = Predictor.load(stores.content, result.manifest_digest, label="refit")
    for seg in ("north", "south"):
        ref = m["models"][seg]
        in_seg = (prep.frame.region == seg).to_numpy()
        train, hold = in_seg & ~prep.holdout, in_seg & prep.holdout
        assert ref["rows_train_refit"] == ref["rows_train"] + ref["rows_holdout"] == in_seg.sum()
        X, y = prep.frame[["usage"]].to_numpy(), prep.y
        first = LinearRegression().fit(X[train], y[train])
        # the metrics are the first fit's, on rows it never saw
        assert ref["metrics"]["mae"] == score(["mae"], y[hold], first.predict(X[hold]))["mae"]
        # the model that serves is the one fit on every row of the segment
        everything = LinearRegression().fit(X[in_seg], y[in_seg])
        served = predictor.predict(prep.frame.loc[in_seg]).values
        np.testing.assert_allclose(served, everything.predict(X[in_seg]), rtol=1e-9)
        assert not np.allclose(served, first.predict(X[in_seg]))
    assert m["fallback"]["rows_train_refit"] == len(df)
