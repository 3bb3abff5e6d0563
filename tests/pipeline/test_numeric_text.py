"""numeric_text: text features whose values are almost all numbers, and the cast that fixes it."""

from __future__ import annotations

import duckdb
import pandas as pd

from kiln.pipeline.numeric_text import numeric_text


def frame(n: int = 100) -> pd.DataFrame:
    temp = [f"{i / 3:.2f}" for i in range(n)]
    temp[5], temp[17] = "n/a ", "?"
    return pd.DataFrame(
        {
            "temp": pd.Series(temp, dtype="string"),
            "code": pd.Series([str(i) for i in range(n)], dtype=object),  # all numbers
            "carrier": pd.Series(["9E", "AA", "1", "2"] * (n // 4), dtype="string"),
            "mixed": pd.Series([str(i) if i % 3 else f"t{i}" for i in range(n)], dtype="string"),
            "numeric": range(n),
            "empty": pd.Series([None] * n, dtype="string"),
        }
    )


def test_text_that_is_almost_all_numbers_is_found_with_its_other_values() -> None:
    df = frame()
    found = {f.column: f for f in numeric_text(df, list(df.columns))}
    assert set(found) == {"temp", "code"}  # 66% numbers (mixed), 50% (carrier): text
    temp = found["temp"]
    assert (temp.values, temp.numbers) == (100, 98)
    assert set(temp.others) == {("n/a ", 1), ("?", 1)}
    message = temp.message(duckdb=True)
    assert "feature 'temp' is text but 98% of its 100 values are numbers" in message
    assert "'n/a ' (1)" in message and "TRY_CAST(temp AS DOUBLE) AS temp" in message
    assert "all of its 100 values are numbers" in found["code"].message(duckdb=True)


def test_the_suggested_casts_run_and_make_the_column_numeric() -> None:
    df = frame()
    [temp] = [f for f in numeric_text(df, ["temp"])]
    for sql in (temp.cast(duckdb=True), temp.cast(duckdb=False)):
        out = duckdb.sql(f"SELECT {sql} FROM df").df()["temp"]
        assert pd.api.types.is_float_dtype(out)
        assert int(out.isna().sum()) == 2 and out.iloc[3] == 1.0


def test_a_frequent_marker_among_many_distinct_numbers_is_found() -> None:
    values = [f"{i}.5" for i in range(70)] + ["NA "] * 30  # 70% of rows, 70 of 71 values
    df = pd.DataFrame({"x": pd.Series(values, dtype="string"), "y": ["a", "1"] * 50})
    [x] = numeric_text(df, ["x", "y"])
    assert x.column == "x" and x.others == (("NA ", 30),)
    assert "70% of its 100 values are numbers" in x.message(duckdb=True)
