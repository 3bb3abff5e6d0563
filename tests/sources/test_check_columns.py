"""check_columns: the columns kiln.yaml names must be there, usable, and named in errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pandas as pd
import pytest

from kiln.errors import SchemaError
from kiln.sources import check_columns

Where = Callable[[str], str]


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "arr_delay": [1.0, -3.0, 12.0, None],
            "distance": [100, 200, 300, 400],
            "temp": [40.0, 41.5, 39.0, 38.0],
            "origin": ["EWR", "JFK", "LGA", "EWR"],
            "time_hour": pd.to_datetime(["2013-01-01 05:00"] * 4),
        }
    )


def _check(df: pd.DataFrame, where: Where, **overrides: object) -> None:
    kwargs: dict[str, object] = {
        "target": "arr_delay",
        "features": ["distance", "temp"],
        "segment_column": "origin",
        "time_column": "time_hour",
    }
    kwargs.update(overrides)
    check_columns(df, where=where, **kwargs)  # type: ignore[arg-type]


def test_passes_on_good_columns(df: pd.DataFrame, where: Where) -> None:
    _check(df, where)
    _check(df, where, segment_column=None)


def test_missing_target_suggests_the_close_name(df: pd.DataFrame, where: Where) -> None:
    with pytest.raises(SchemaError) as info:
        _check(df, where, target="arr_delai")
    message = str(info.value)
    assert message.startswith(
        "kiln.yaml:7:3: target: column 'arr_delai' is not in the data (did you mean 'arr_delay'?)"
    )
    assert "available columns: arr_delay, distance, temp, origin, time_hour" in message
    assert "data.query" in (info.value.hint or "")


def test_every_missing_column_of_every_field_at_once(df: pd.DataFrame, where: Where) -> None:
    with pytest.raises(SchemaError) as info:
        _check(
            df,
            where,
            features=["distance", "Temp", "wind_speed"],
            segment_column="carrier",
            time_column="time",
        )
    lines = str(info.value).splitlines()
    assert lines[0] == (
        "kiln.yaml:7:3: features: columns 'Temp' (did you mean 'temp'?), 'wind_speed' "
        "are not in the data"
    )
    assert lines[1] == "kiln.yaml:7:3: segments.column: column 'carrier' is not in the data"
    assert lines[2] == (
        "kiln.yaml:7:3: data.time_column: column 'time' is not in the data "
        "(did you mean 'time_hour'?)"
    )


def test_nulls_in_the_segment_column(df: pd.DataFrame, where: Where) -> None:
    df = df.assign(origin=["EWR", None, "LGA", None])
    with pytest.raises(SchemaError) as info:
        _check(df, where)
    message = str(info.value)
    assert message.startswith("kiln.yaml:7:3: segments.column: segment column 'origin' has 2 null")
    assert "(50.00% of 4 rows)" in message
    assert "e.g. at rows [1, 3]" in message
    hint = info.value.hint or ""
    assert "WHERE origin IS NOT NULL" in hint
    assert "COALESCE(origin, 'unknown')" in hint


def test_time_column_as_parseable_text_or_dates(df: pd.DataFrame, where: Where) -> None:
    _check(
        df.assign(time_hour=["2013-01-01 05:00:00", "2013-01-01T06:00Z", None, "2013-01-02"]), where
    )
    _check(df.assign(time_hour=[date(2013, 1, d) for d in range(1, 5)]), where)
    _check(df.assign(time_hour=df["time_hour"].dt.tz_localize("America/New_York")), where)


def test_time_column_that_is_not_parseable(df: pd.DataFrame, where: Where) -> None:
    bad = df.assign(time_hour=["2013-01-01", "soon", "later", "2013-01-02"])
    with pytest.raises(SchemaError) as info:
        _check(bad, where)
    message = str(info.value)
    assert message.startswith("kiln.yaml:7:3: data.time_column: time column 'time_hour'")
    assert "2 of 4 values are not timestamps, e.g. 'soon', 'later'" in message
    assert "CAST(time_hour AS TIMESTAMP)" in (info.value.hint or "")


def test_numeric_time_column_is_refused(df: pd.DataFrame, where: Where) -> None:
    with pytest.raises(SchemaError, match="holds int64 values, not timestamps"):
        _check(df.assign(time_hour=[1, 2, 3, 4]), where)


def test_empty_time_column_is_refused(df: pd.DataFrame, where: Where) -> None:
    with pytest.raises(SchemaError, match="it has no values"):
        _check(df.assign(time_hour=pd.Series([None] * 4, dtype="str")), where)


@pytest.mark.parametrize(
    ("values", "reading", "expected"),
    [
        ([2013.0, 2013.5, 2014.25, 2016.75], "decimal years such as 2013.5", [
            "2013-01-01 00:00:00", "2013-07-02 15:00:00", "2014-04-02 07:30:00",
            "2016-09-30 22:30:00",
        ]),
        ([2013, 2014, 2015, 2016], "years such as 2013", [
            "2013-01-01", "2014-01-01", "2015-01-01", "2016-01-01",
        ]),
        ([20130105, 20131231, 20140101, 20160229], "dates written as YYYYMMDD", [
            "2013-01-05", "2013-12-31", "2014-01-01", "2016-02-29",
        ]),
        ([1357016400, 1357020000, 1388552400, 1388556000], "if they are epoch seconds", [
            "2013-01-01 05:00", "2013-01-01 06:00", "2014-01-01 05:00", "2014-01-01 06:00",
        ]),
        ([1357016400000, 1357020000000, 1388552400000, 1388556000000], "epoch milliseconds", [
            "2013-01-01 05:00", "2013-01-01 06:00", "2014-01-01 05:00", "2014-01-01 06:00",
        ]),
    ],
)  # fmt: skip
def test_numeric_time_column_hint_is_sql_that_runs(
    df: pd.DataFrame, where: Where, values: list[float], reading: str, expected: list[str]
) -> None:
    """The suggested conversion is DuckDB SQL that turns these very values into timestamps
    (CAST(x AS TIMESTAMP) fails on a number, and to_timestamp reads a year as 1970)."""
    import duckdb

    bad = df.assign(time_hour=values)
    with pytest.raises(SchemaError) as info:
        _check(bad, where)
    assert reading in info.value.message
    hint = info.value.hint or ""
    expr = hint.split("e.g. ", 1)[1].removesuffix(" AS time_hour")
    got = duckdb.sql(f"SELECT {expr} AS t FROM bad").df()["t"]
    got = pd.to_datetime(got).dt.tz_localize(None) if got.dt.tz else got
    assert got.tolist() == pd.to_datetime(expected, format="ISO8601").tolist()
