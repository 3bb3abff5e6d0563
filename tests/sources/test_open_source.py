"""open_source on each kind of data.source, and every error it can raise before or on read."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from kiln.errors import SourceError
from kiln.sources import open_source

WHERE = "kiln.yaml:5:11: data.source"


def _make_duckdb(path: Path) -> Path:
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE flights AS SELECT range AS id, range * 2 AS x FROM range(10)")
        con.execute("CREATE SCHEMA ext")
        con.execute("CREATE TABLE ext.weather AS SELECT 1 AS t")
    finally:
        con.close()
    return path


def _error(spec: str, base_dir: Path, query: str | None = "SELECT 1") -> SourceError:
    with pytest.raises(SourceError) as info:
        open_source(spec, base_dir=base_dir, where=WHERE).read(query)
    assert str(info.value).startswith(WHERE + ": ")
    assert info.value.hint
    return info.value


# --- DuckDB files -------------------------------------------------------------------------


def test_duckdb_relative_and_absolute_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _make_duckdb(tmp_path / "sub" / "wh.duckdb")
    for spec in ("sub/wh.duckdb", str(tmp_path / "sub" / "wh.duckdb"), "duckdb:///sub/wh.duckdb",
                 f"duckdb:///{tmp_path}/sub/wh.duckdb"):  # fmt: skip
        source = open_source(spec, base_dir=tmp_path, where=WHERE)
        assert source.read("SELECT sum(x) AS s FROM flights").column("s").to_pylist() == [90]
        assert source.describe() == f"DuckDB file {tmp_path / 'sub' / 'wh.duckdb'}"


def test_duckdb_is_opened_read_only_and_released(tmp_path: Path) -> None:
    path = _make_duckdb(tmp_path / "wh.duckdb")
    source = open_source("wh.duckdb", base_dir=tmp_path, where=WHERE)
    with pytest.raises(SourceError) as info:
        source.read("CREATE TABLE y AS SELECT 1")
    assert "read-only" in str(info.value).lower() or "read only" in str(info.value).lower()
    source.read("SELECT * FROM flights")
    writer = duckdb.connect(str(path))  # no lock is held between reads
    writer.close()


def test_duckdb_without_query_lists_the_tables(tmp_path: Path) -> None:
    _make_duckdb(tmp_path / "wh.duckdb")
    error = _error("wh.duckdb", tmp_path, query=None)
    assert "data.query is needed" in str(error)
    assert "tables found: flights, ext.weather" in str(error)
    assert "SELECT * FROM flights" in (error.hint or "")


def test_duckdb_missing_file_names_path_and_base_dir(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        open_source("nope/wh.duckdb", base_dir=tmp_path, where=WHERE)
    message = str(info.value)
    assert message.startswith(WHERE + ": ")
    assert str(tmp_path / "nope" / "wh.duckdb") in message
    assert "does not exist" in message
    assert f"relative to {tmp_path}" in message
    assert "data.source" in (info.value.hint or "")


def test_duckdb_url_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source("duckdb:///gone.duckdb", base_dir=tmp_path, where=WHERE)


def test_not_a_duckdb_file(tmp_path: Path) -> None:
    (tmp_path / "fake.duckdb").write_text("not a database")
    error = _error("fake.duckdb", tmp_path)
    assert "cannot open DuckDB file" in str(error)
    assert "not a valid DuckDB database" in str(error)


# --- parquet and csv files ----------------------------------------------------------------


def test_parquet_glob_reads_every_file_as_data(tmp_path: Path) -> None:
    import pyarrow as pa

    (tmp_path / "parts").mkdir()
    for i in range(3):
        pq.write_table(
            pa.table({"part": [i] * 4, "v": list(range(4))}), tmp_path / f"parts/{i}.parquet"
        )
    source = open_source("parts/*.parquet", base_dir=tmp_path, where=WHERE)
    assert source.read(None).num_rows == 12
    grouped = source.read("SELECT part, count(*) AS n FROM data GROUP BY part ORDER BY part")
    assert grouped.column("n").to_pylist() == [4, 4, 4]
    assert "parquet file(s)" in source.describe()


def test_csv_default_query_is_all_of_data(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("k,when\nx,2024-01-01 00:00:00\ny,2024-01-02 00:00:00\n")
    table = open_source("a.csv", base_dir=tmp_path, where=WHERE).read(None)
    assert table.column_names == ["k", "when"]
    assert str(table.schema.field("when").type).startswith("timestamp")


def test_csv_na_markers_are_missing_so_numbers_stay_numbers(tmp_path: Path) -> None:
    """Numbers with "NA" cells were read as text and trained on as categories."""
    (tmp_path / "a.csv").write_text(
        "temp,wind,city,note\n"
        "40.5,10,NYC,ok\n"
        "NA,N/A,NA,NULL\n"
        "38.0,null,LA,\n"
        "NaN,12,SF,n/a \n"  # 'n/a ' (trailing blank) is not a marker: note stays text
    )
    table = open_source("a.csv", base_dir=tmp_path, where=WHERE).read(None)
    assert str(table.schema.field("temp").type) == "double"
    assert str(table.schema.field("wind").type) == "int64"
    assert table.column("temp").to_pylist() == [40.5, None, 38.0, None]
    assert table.column("wind").to_pylist() == [10, None, None, 12]
    assert table.column("city").to_pylist() == ["NYC", None, "LA", "SF"]  # as pandas reads it
    assert table.column("note").to_pylist() == ["ok", None, None, "n/a "]


def test_missing_file_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        open_source("data/rows.parquet", base_dir=tmp_path, where=WHERE)
    assert str(tmp_path / "data" / "rows.parquet") in str(info.value)
    assert f"relative to {tmp_path}" in str(info.value)
    with pytest.raises(SourceError) as info:
        open_source("data/*.csv", base_dir=tmp_path, where=WHERE)
    assert f"no file matches {tmp_path / 'data' / '*.csv'}" in str(info.value)


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").mkdir()
    with pytest.raises(SourceError, match="is not a file"):
        open_source("d.parquet", base_dir=tmp_path, where=WHERE)


def test_corrupt_parquet(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"definitely not parquet")
    error = _error("bad.parquet", tmp_path, query=None)
    assert "cannot read parquet file(s)" in str(error)
    assert "valid parquet" in (error.hint or "")


def test_empty_csv_has_no_rows(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("a,b\n")
    error = _error("empty.csv", tmp_path, query=None)
    assert "the query returned no rows" in str(error)


def test_unknown_kind_of_source(tmp_path: Path) -> None:
    (tmp_path / "rows.xlsx").write_text("x")
    with pytest.raises(SourceError) as info:
        open_source("rows.xlsx", base_dir=tmp_path, where=WHERE)
    assert str(info.value).startswith(WHERE + ": cannot tell what kind of source")
    assert ".parquet" in (info.value.hint or "")


# --- database URLs ------------------------------------------------------------------------


def test_unreachable_database_is_fast_and_masks_the_password(tmp_path: Path) -> None:
    source = open_source(
        "postgresql://kiln:s3cret-pw@127.0.0.1:1/warehouse", base_dir=tmp_path, where=WHERE
    )
    assert source.describe() == "database postgresql+psycopg://kiln:***@127.0.0.1:1/warehouse"
    started = time.perf_counter()
    error = _error("postgresql://kiln:s3cret-pw@127.0.0.1:1/warehouse", tmp_path)
    assert time.perf_counter() - started < 5
    message = str(error)
    assert "s3cret-pw" not in message
    assert "cannot connect to postgresql+psycopg://kiln:***@127.0.0.1:1/warehouse" in message
    assert "refused" in message.lower()  # the driver's reason
    assert "running and reachable" in (error.hint or "")


def test_unknown_scheme(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        open_source("nosuchdb://u:pw@host/db", base_dir=tmp_path, where=WHERE)
    assert "unknown database scheme 'nosuchdb'" in str(info.value)
    assert "pw@" not in str(info.value)


def test_driver_not_installed(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        open_source("mysql+pymysql://u:pw@host/db", base_dir=tmp_path, where=WHERE)
    assert "the driver 'pymysql'" in str(info.value)
    assert "not installed" in str(info.value)
    assert "pip install pymysql" in (info.value.hint or "")


def test_invalid_url(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a valid database URL"):
        open_source("postgresql://u@host:notaport/db", base_dir=tmp_path, where=WHERE)


def test_sqlite_missing_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        open_source("sqlite:///missing.db", base_dir=tmp_path, where=WHERE)
    assert str(tmp_path / "missing.db") in str(info.value)
    assert not (tmp_path / "missing.db").exists()


def test_database_without_query_lists_tables(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(tmp_path / "x.db")) as con:
        con.execute("CREATE TABLE trips (id INTEGER)")
        con.commit()
    error = _error("sqlite:///x.db", tmp_path, query=None)
    assert "data.query is needed" in str(error)
    assert "tables found: trips" in str(error)


@pytest.mark.postgres
def test_postgres_types_and_url_rewrite(pg_url: str, tmp_path: Path) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (n NUMERIC(8, 2), b BOOLEAN, z TIMESTAMPTZ)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1.25, true, '2024-01-01 00:00+00')"))
    engine.dispose()
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    source = open_source(plain, base_dir=tmp_path, where=WHERE)
    assert source.describe().startswith("database postgresql+psycopg://")
    table = source.read("SELECT n, b, z, NULL::int AS nothing FROM t")
    assert table.column("n").to_pylist() == [1.25]  # NUMERIC becomes float64
    assert str(table.schema.field("n").type) == "double"
    assert table.column("b").to_pylist() == [True]
    assert table.schema.field("z").type.tz is not None
    with pytest.raises(SourceError, match="tables found: t"):
        source.read(None)
