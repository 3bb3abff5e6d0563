"""validate_data: each declared check passes on good data and fails with the right report."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from kiln.config.models import ChecksConfig
from kiln.errors import DataCheckError, SchemaError
from kiln.sources import validate_data

Where = Callable[[str], str]


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "delay": [-5.0, 0.0, 12.0, None, 30.0, 3.0],
            "origin": ["EWR", "JFK", "LGA", "EWR", "JFK", "LGA"],
            "when": pd.to_datetime([f"2013-12-31 {h:02d}:00" for h in (1, 2, 3, 4, 5, 6)]),
        }
    )


def _validate(df: pd.DataFrame, where: Where, checks: dict[str, Any]) -> dict[str, object]:
    config = ChecksConfig.model_validate(checks)
    return validate_data(df, config, time_column="when", where=where)


def _failure(df: pd.DataFrame, where: Where, checks: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(DataCheckError) as info:
        _validate(df, where, checks)
    error = info.value
    assert str(error).startswith(f"kiln.yaml:7:3: checks: 1 data check(s) failed on {len(df)} rows")
    assert error.hint
    assert len(error.report) == 1
    json.dumps(error.report)  # the report goes to logs and the API as it is
    return error.report[0]


def test_no_checks(df: pd.DataFrame, where: Where) -> None:
    assert _validate(df, where, {}) == {"rows": 6, "checks_run": 0, "checks": []}


def test_all_pass_and_summary(df: pd.DataFrame, where: Where) -> None:
    summary = _validate(
        df,
        where,
        {
            "min_rows": 6,
            "freshness": {"max_age": "1d", "as_of": "2014-01-01T00:00:00"},
            "columns": {
                "delay": {"not_null": 0.8, "min": -5, "max": 30},
                "origin": {"allowed": ["EWR", "JFK", "LGA"], "not_null": 1.0},
                "id": {"unique": True},
            },
        },
    )
    assert summary["rows"] == 6
    assert summary["checks_run"] == 8
    assert summary["checks"] == [
        "delay:not_null", "delay:min", "delay:max", "origin:not_null", "origin:allowed",
        "id:unique", "*:min_rows", "when:freshness",
    ]  # fmt: skip
    assert summary["newest"] == "2013-12-31T06:00:00"


def test_not_null(df: pd.DataFrame, where: Where) -> None:
    entry = _failure(df, where, {"columns": {"delay": {"not_null": 0.9}}})
    assert entry == {
        "column": "delay",
        "check": "not_null",
        "expected": "non-null share >= 0.9",
        "observed": 0.8333,
        "failing_examples": ["row 3"],
        "failing_count": 1,
    }


def test_min(df: pd.DataFrame, where: Where) -> None:
    entry = _failure(df, where, {"columns": {"delay": {"min": 0}}})
    assert (entry["check"], entry["column"], entry["expected"]) == ("min", "delay", ">= 0")
    assert entry["observed"] == -5.0
    assert entry["failing_examples"] == [-5.0]
    assert entry["failing_count"] == 1


def test_max(df: pd.DataFrame, where: Where) -> None:
    entry = _failure(df, where, {"columns": {"delay": {"max": 10.5}}})
    assert (entry["check"], entry["expected"], entry["observed"]) == ("max", "<= 10.5", 30.0)
    assert entry["failing_examples"] == [12.0, 30.0]
    assert entry["failing_count"] == 2


def test_allowed(df: pd.DataFrame, where: Where) -> None:
    entry = _failure(df, where, {"columns": {"origin": {"allowed": ["EWR"]}}})
    assert entry["check"] == "allowed"
    assert entry["expected"] == "one of ['EWR']"
    assert entry["observed"] == 2  # distinct unexpected values
    assert entry["failing_examples"] == ["JFK", "LGA"]
    assert entry["failing_count"] == 4


def test_allowed_ignores_nulls(df: pd.DataFrame, where: Where) -> None:
    _validate(df, where, {"columns": {"delay": {"allowed": [-5, 0, 12, 30, 3]}}})


def test_unique(df: pd.DataFrame, where: Where) -> None:
    _validate(
        df.assign(delay=[1.0, None, None, 2.0, 3.0, 4.0]),
        where,
        {"columns": {"delay": {"unique": True}}},
    )
    entry = _failure(df, where, {"columns": {"origin": {"unique": True}}})
    assert entry["check"] == "unique"
    assert entry["observed"] == 3
    assert entry["failing_examples"] == ["EWR", "JFK", "LGA"]
    assert entry["failing_count"] == 6


def test_min_rows(df: pd.DataFrame, where: Where) -> None:
    entry = _failure(df, where, {"min_rows": 7})
    assert entry["check"] == "min_rows"
    assert entry["expected"] == ">= 7 rows"
    assert entry["observed"] == 6
    assert entry["failing_examples"] == []


def test_freshness_naive_data(df: pd.DataFrame, where: Where) -> None:
    fresh = {"freshness": {"max_age": "20h", "as_of": "2014-01-01T00:00:00+00:00"}}
    _validate(df, where, fresh)
    entry = _failure(df, where, {"freshness": {"max_age": "12h", "as_of": "2014-01-02"}})
    assert entry["column"] == "when"
    assert entry["check"] == "freshness"
    assert entry["observed"] == "2013-12-31T06:00:00"
    assert entry["expected"] == "newest >= 2014-01-01T12:00:00 (max_age 12:00:00)"


def test_freshness_aware_data_and_default_now(df: pd.DataFrame, where: Where) -> None:
    recent = datetime.now(UTC) - timedelta(hours=1)
    aware = df.assign(when=pd.Series([recent] * 6).dt.tz_convert("America/New_York"))
    _validate(aware, where, {"freshness": {"max_age": "2h"}})
    naive_utc_now = datetime.now(UTC).replace(tzinfo=None).isoformat()  # naive = UTC
    _validate(aware, where, {"freshness": {"max_age": "2h", "as_of": naive_utc_now}})
    entry = _failure(aware, where, {"freshness": {"max_age": "30m"}})
    assert entry["observed"] == pd.Timestamp(recent).tz_convert("America/New_York").isoformat()
    assert "(max_age 0:30:00)" in entry["expected"]


def test_freshness_on_text_timestamps(df: pd.DataFrame, where: Where) -> None:
    text = df.assign(when=df["when"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    entry = _failure(text, where, {"freshness": {"max_age": "2d", "as_of": "2014-02-01"}})
    assert entry["observed"] == "2013-12-31T06:00:00"


def test_every_failure_is_reported_at_once(df: pd.DataFrame, where: Where) -> None:
    with pytest.raises(DataCheckError) as info:
        _validate(
            df,
            where,
            {
                "min_rows": 100,
                "columns": {"delay": {"not_null": 1.0, "max": 0}, "origin": {"allowed": ["X"]}},
            },
        )
    report = info.value.report
    assert [(r["column"], r["check"]) for r in report] == [
        ("delay", "not_null"), ("delay", "max"), ("origin", "allowed"), ("*", "min_rows"),
    ]  # fmt: skip
    message = str(info.value)
    assert message.startswith("kiln.yaml:7:3: checks: 4 data check(s) failed on 6 rows")
    assert "column 'origin': check allowed failed (expected one of ['X'], observed 3)" in message


def test_checked_column_missing_is_a_schema_error(df: pd.DataFrame, where: Where) -> None:
    with pytest.raises(SchemaError) as info:
        _validate(df, where, {"columns": {"dealy": {"not_null": 1.0}}})
    message = str(info.value)
    assert message.startswith(
        "kiln.yaml:7:3: checks.columns.dealy: column 'dealy' is not in the data "
        "(did you mean 'delay'?)"
    )
    assert "available columns: id, delay, origin, when" in message


def test_min_max_on_text_is_a_schema_error(df: pd.DataFrame, where: Where) -> None:
    with pytest.raises(SchemaError, match="min/max need a numeric column"):
        _validate(df, where, {"columns": {"origin": {"min": 0}}})


def test_freshness_without_time_column(df: pd.DataFrame, where: Where) -> None:
    with pytest.raises(SchemaError, match=r"checks.freshness: column 'when' is not in the data"):
        _validate(df.drop(columns="when"), where, {"freshness": {"max_age": "1d"}})
