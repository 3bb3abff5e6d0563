"""`kiln init --from`: the kiln.yaml inferred from the data validates and runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kiln.config.models import DataConfig


def test_from_the_flights_warehouse_with_a_query_validates_and_runs(
    cli, tmp_path: Path, warehouse: Path
) -> None:
    query = "SELECT * FROM flights WHERE month = 1 AND day <= 10"
    r = cli(
        "init", "proj", "--from", str(warehouse), "--query", query, "--target", "arr_delay",
        "--segment", "origin", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "proj" / "kiln.yaml").read_text()
    assert "time_column: time_hour" in text and "#   flight_id: unique per row" in text
    assert re.search(r"- carrier +# categorical, \d+ values", text), text
    home = ["--home", str(tmp_path / ".kiln")]
    v = cli("validate", "proj/kiln.yaml", cwd=tmp_path)
    assert v.returncode == 0, v.stderr
    run = cli(*home, "run", "proj/kiln.yaml", "--skip-gates", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "registered proj v1" in run.stdout and "EWR" in run.stdout


def test_a_database_needs_a_query_and_an_existing_file_is_kept(
    cli, tmp_path: Path, warehouse: Path
) -> None:
    r = cli("init", "--from", str(warehouse), "--target", "arr_delay", cwd=tmp_path)
    assert r.returncode == 2 and "needs --query" in r.stderr and "flights" in r.stderr
    (tmp_path / "kiln.yaml").write_text("mine\n")
    args = ["init", "--from", str(warehouse), "--query", "SELECT * FROM airlines LIMIT 5"]
    again = cli(*args, "--target", "name", cwd=tmp_path)
    assert again.returncode == 1 and "exists already" in again.stderr and "--force" in again.stderr
    assert (tmp_path / "kiln.yaml").read_text() == "mine\n"
    r = cli("init", "--target", "x", cwd=tmp_path)
    assert r.returncode == 2 and "--target goes with --from" in r.stderr


@pytest.mark.skipif(
    DataConfig.model_fields["time_column"].is_required(),
    reason="needs data.time_column optional and a random split (issue 8, item 17)",
)
def test_from_a_csv_without_time_column_validates_and_runs(cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 1500
    df = pd.DataFrame(
        {
            "customer": np.arange(n),
            "plan": rng.choice(["basic", "pro"], n),
            "age": rng.integers(18, 80, n),
            "visits": rng.poisson(4, n),
        }
    )
    df["churned"] = ((df["visits"] < 3) ^ (rng.random(n) < 0.1)).astype(int)
    df.to_csv(tmp_path / "customers.csv", index=False)
    r = cli(
        "init", "--from", "customers.csv", "--target", "churned", "--segment", "plan",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "kiln.yaml").read_text()
    assert 'source: "customers.csv"' in text and "task: classification" in text
    assert "time_column" not in text.split("# no time column")[0].split("data:")[1]
    v = cli("validate", "kiln.yaml", cwd=tmp_path)
    assert v.returncode == 0, v.stderr
    run = cli("--home", str(tmp_path / ".kiln"), "run", "kiln.yaml", "--skip-gates", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "registered" in run.stdout
