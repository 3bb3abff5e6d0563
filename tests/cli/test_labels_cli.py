"""`kiln labels add` on bad input: each refusal names the file or column and the fix, and stores
nothing; a query on the warehouse stores real labels, all counted as unknown (nothing captured)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kiln.settings import Settings
from kiln.stores.labels import LabelStore
from tests.conftest import BASE, merge

pytestmark = pytest.mark.slow

PIPELINE = "flights-test"


def _said(text: str) -> str:
    return " ".join(text.split())


def test_labels_add_refuses_bad_files_and_queries_and_takes_a_good_query(
    cli, tmp_path: Path, warehouse: Path
) -> None:
    config = tmp_path / "kiln.yaml"
    config.write_text(yaml.safe_dump(merge(BASE, {"data": {"source": str(warehouse)}})))
    home = ["--home", str(tmp_path / ".kiln")]

    def add(*args: str) -> tuple[int, str]:
        r = cli(*home, "labels", "add", PIPELINE, *args, "--config", str(config), cwd=tmp_path)
        return r.returncode, _said(r.stdout + r.stderr)

    wrong_column = tmp_path / "wrong.csv"
    wrong_column.write_text("request_id,delay\nr1,3.5\n")
    code, said = add(str(wrong_column))
    assert code == 3
    assert f"{wrong_column}: no column 'arr_delay' (columns: request_id, delay)" in said
    assert "monitor.labels.column" in said

    mistyped = tmp_path / "mistyped.csv"
    mistyped.write_text("request_id,arr_delay\nr1,late\nr2,early\n")
    code, said = add(str(mistyped))
    assert code == 3
    assert "label column 'arr_delay' holds string; a regression target needs numbers" in said

    empty = tmp_path / "empty.csv"
    empty.write_text("request_id,arr_delay\n")
    code, said = add(str(empty))
    assert code == 3 and f"{empty}: holds no rows" in said

    code, said = add(str(tmp_path / "labels.json"))
    assert code == 3 and "give a .csv or .parquet file" in said

    code, said = add("--query", "SELECT flight_id AS request_id, arr_delay FROM no_such_table")
    assert code == 3
    assert "kiln labels add --query: the query failed" in said and "no_such_table" in said

    code, said = add()
    assert code == 2 and "give either FILE or --query" in said

    r = cli(*home, "labels", "add", "other", str(empty), "--config", str(config), cwd=tmp_path)
    assert r.returncode == 2 and "the config of pipeline 'flights-test', not 'other'" in r.stderr

    root = Settings(home=tmp_path / ".kiln").artifact_root
    assert LabelStore(root).files(PIPELINE) == []  # nothing stored by a refusal

    flights = "SELECT CAST(flight_id AS VARCHAR) AS request_id, arr_delay FROM flights"
    query = (  # 20 cancelled flights (no arr_delay) and 180 that arrived
        f"({flights} WHERE month = 3 AND arr_delay IS NULL ORDER BY flight_id LIMIT 20)"
        f" UNION ALL ({flights} WHERE month = 3 AND arr_delay IS NOT NULL"
        " ORDER BY flight_id LIMIT 180)"
    )
    code, said = add("--query", query)
    assert code == 0, said
    stored = LabelStore(root).read(PIPELINE)
    assert stored.num_rows == 180
    bad = 20
    assert f"{stored.num_rows} labels of {PIPELINE} stored from the --query result" in said
    assert f"{bad} rows not stored" in said and "no label" in said
    assert f"{stored.num_rows} labelled keys of {PIPELINE} match no captured request" in said
