"""A small synthetic 3-class dataset (a parquet file queried as ``data``) and its kiln.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kiln.config import LoadedConfig, load_config

CLASSES = ["early", "late", "very_late"]


def write_rows(path: Path, n: int = 1200, seed: int = 0) -> Path:
    """Rows over 60 days: the label follows x (and a bit of noise); segments a and b."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    z = rng.normal(size=n)
    score = x + 0.3 * rng.normal(size=n)
    label = np.where(score < -0.4, "early", np.where(score < 0.6, "late", "very_late"))
    df = pd.DataFrame(
        {
            "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 60, n)), "D"),
            "x": x,
            "z": z,
            "kind": rng.choice(["p", "q", "r"], size=n),
            "seg": rng.choice(["a", "b"], size=n),
            "status": label,
        }
    )
    df.to_parquet(path)
    return path


def pipeline(source: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "classes",
        "owner": "tests@example.com",
        "data": {"source": str(source), "query": "SELECT * FROM data", "time_column": "ts"},
        "target": {"column": "status", "task": "classification"},
        "features": ["x", "z", "kind"],
        "segments": {"column": "seg", "values": "auto", "min_rows": 100},
        "model": {
            "estimator": "lightgbm.LGBMClassifier",
            "params": {"n_estimators": 20, "num_leaves": 7, "min_child_samples": 5},
        },
        "evaluation": {"split": {"holdout_start": "2024-02-15"}},
        "resources": {"cpus": 2},
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            merged = {**data[key], **value}
            data[key] = {k: v for k, v in merged.items() if v is not None}
        else:
            data[key] = value
    return data


def write_config(folder: Path, source: Path, name: str = "kiln.yaml", **changes: Any) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(pipeline(source, **changes), sort_keys=False))
    return path


def load(folder: Path, source: Path, name: str = "kiln.yaml", **changes: Any) -> LoadedConfig:
    return load_config(write_config(folder, source, name, **changes))
