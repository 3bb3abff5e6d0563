"""`kiln predict`: which version scores (production by default), and rows checked as the server
checks them (bad rows listed by row and column, exit 3), unseen categories flagged and counted."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import yaml

from kiln.config import load_config
from kiln.registry import Stages
from kiln.registry.package import environment_lock
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import open_stores
from tests.conftest import BASE, merge, register_changed

pytestmark = pytest.mark.slow

PIPELINE = "flights-test"
ROWS = [
    {"origin": "JFK", "dest": "LAX", "carrier": "AA", "hour": 9, "day_of_week": 3,
     "distance": 2475.0, "temp": 30.0, "wind_speed": 10.0, "precip": 0.0, "visib": 10.0},
    {"origin": "LGA", "dest": "ZZZ", "carrier": "AA", "hour": 9, "day_of_week": 3,
     "distance": 300.0, "temp": 60.0, "wind_speed": 5.0, "precip": 0.0, "visib": 10.0},
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, warehouse: Path) -> Path:
    """A home with v1 of flights-test (a candidate that rejects unseen categories, as its
    kiln.yaml says), trained once for the module."""
    base = tmp_path_factory.mktemp("predict")
    path = base / "kiln.yaml"
    changes = {"data": {"source": str(warehouse)}, "serving": {"unseen_categories": "reject"}}
    path.write_text(yaml.safe_dump(merge(BASE, changes)))
    settings = Settings(home=base / "home")
    stores = open_stores(settings, upgrade=True)
    try:
        result = Runner(settings, stores).run(load_config(path))
        assert result.version == 1
        manifest = orjson.loads(stores.content.get(result.manifest_digest, what="manifest"))
        assert manifest["serving"] == {  # the policy and the text limit travel
            "unseen_categories": "reject",
            "max_text_length": 256,
        }
    finally:
        stores.close()
    return settings.home


@pytest.fixture
def home(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "home"))


def register_with(home: Path, version: int, **manifest: Any) -> int:
    """A new candidate: the package of ``version`` with ``manifest`` keys changed."""
    return register_changed(home, PIPELINE, version, manifest)


def promote(home: Path, version: int) -> None:
    stores = open_stores(Settings(home=home))
    try:
        Stages(stores.metadata).promote(PIPELINE, version, actor="tests")
    finally:
        stores.close()


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_production_scores_by_default_and_the_version_is_named(
    home: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    rows = write_csv(tmp_path / "rows.csv", [ROWS[0], {**ROWS[0], "origin": "LGA"}])
    out = tmp_path / "out.csv"
    args = ("--home", str(home), "predict", PIPELINE, "--input", str(rows))

    none = cli(*args, cwd=tmp_path)
    assert none.returncode == 6 and "Traceback" not in none.stderr
    assert "has no production version (newest: v1 candidate)" in none.stderr
    assert "--version N" in none.stderr and f"kiln promote {PIPELINE} N" in none.stderr

    promote(home, 1)
    newer = register_with(home, 1)  # the newest version is a candidate, not production
    assert newer == 2
    used = cli(*args, "--output", str(out), cwd=tmp_path)
    assert used.returncode == 0, used.stderr
    assert f"pipeline {PIPELINE} version 1 (production)" in used.stdout
    scored = pd.read_csv(out, keep_default_na=False)
    assert scored["version"].tolist() == [1, 1]
    assert scored["model"].tolist() == ["JFK", "LGA"]

    chosen = cli(*args, "--version", "2", cwd=tmp_path)
    assert chosen.returncode == 0, chosen.stderr
    assert f"pipeline {PIPELINE} version 2 (candidate)" in chosen.stdout


def test_bad_rows_are_refused_by_row_and_column_as_the_server_does(
    home: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    many = [dict(ROWS[0]) for _ in range(30)]
    many[16]["distance"] = "abc"  # row 17, line 18 of the CSV
    many[20]["hour"] = "9am"
    rows = write_csv(tmp_path / "bad.csv", many)
    no_dest = write_csv(
        tmp_path / "no_dest.csv", [{k: v for k, v in ROWS[0].items() if k != "dest"}]
    )
    no_origin = write_csv(
        tmp_path / "no_origin.csv", [{k: v for k, v in ROWS[0].items() if k != "origin"}]
    )
    args = ("--home", str(home), "predict", PIPELINE, "--version", "1", "--input")

    bad = cli(*args, str(rows), cwd=tmp_path)
    assert bad.returncode == 3 and "Traceback" not in bad.stderr, bad.stderr
    text = " ".join(bad.stderr.split())
    assert "2 of 30 row(s) cannot be scored by flights-test v1" in text
    assert (
        "row 17 (line 18 of the CSV), column 'distance': expected a finite number or null,"
        " got 'abc'" in text
    )
    assert "row 21 (line 22 of the CSV), column 'hour': expected a finite number or null" in text
    assert "'distance' 1, 'hour' 1" in text

    for path, column in ((no_dest, "dest"), (no_origin, "origin")):  # origin: the segments
        missing = cli(*args, str(path), cwd=tmp_path)
        assert missing.returncode == 3 and "Traceback" not in missing.stderr, missing.stderr
        text = " ".join(missing.stderr.split())
        assert f"missing column(s) '{column}'; flights-test v1 expects origin, dest," in text


def test_unseen_categories_are_flagged_counted_and_follow_the_policy(
    home: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    rows = write_csv(tmp_path / "rows.csv", ROWS)
    out = tmp_path / "out.parquet"
    args = ("--home", str(home), "predict", PIPELINE, "--input", str(rows), "--version")

    accept = register_with(home, 1, serving={"unseen_categories": "accept"})
    accepted = cli(*args, str(accept), "--output", str(out), cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert "unseen categories (rows per feature): dest 1 (answered as missing)" in accepted.stdout
    scored = pd.read_parquet(out)
    assert [list(u) for u in scored["unseen"]] == [[], ["dest"]]
    assert scored["model"].tolist() == ["JFK", "LGA"]

    fallback = register_with(home, 1, serving={"unseen_categories": "fallback"})
    fell = cli(*args, str(fallback), "--output", str(out), cwd=tmp_path)
    assert fell.returncode == 0, fell.stderr
    scored = pd.read_parquet(out)
    assert scored["model"].tolist() == ["JFK", "__fallback__"]
    assert scored["fallback"].tolist() == [False, True]

    refused = cli(*args, "1", cwd=tmp_path)  # v1: reject, from its kiln.yaml
    assert refused.returncode == 3, refused.stderr
    text = " ".join(refused.stderr.split())
    assert "row 2 (line 3 of the CSV), column 'dest': unseen category (known: " in text
    assert "got 'ZZZ'" in text


def test_a_package_built_with_another_lightgbm_is_refused_as_the_server_refuses_it(
    home: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    lock = environment_lock()
    lock["packages"]["lightgbm"] = "1.0.0"
    number = register_with(home, 1, environment=lock)
    rows = write_csv(tmp_path / "rows.csv", [ROWS[0]])
    args = ("--home", str(home), "predict", PIPELINE, "--input", str(rows))

    refused = cli(*args, "--version", str(number), cwd=tmp_path)
    assert refused.returncode == 5 and "Traceback" not in refused.stderr, refused.stderr
    text = " ".join(refused.stderr.split())
    assert f"{PIPELINE} v{number} was built with other library versions than this" in text
    assert "lightgbm: package built with 1.0.0, this process has" in text
    assert cli(*args, "--version", "1", cwd=tmp_path).returncode == 0
