"""The one rule of what a row to predict may hold, applied to a whole DataFrame (batch scoring)
and, through the same rules, by the server's request schema."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pandas as pd
import pytest

from kiln.pipeline.features import FeatureSchema
from kiln.pipeline.rows import (
    EXPECTED,
    MAX_TEXT_LENGTH,
    check_frame,
    row_rules,
    text_limit,
    unseen_policy,
)
from kiln.serving._errors import ApiError
from kiln.serving._schema import RequestSchema

SCHEMA = FeatureSchema.from_dict(
    [
        {"name": "dest", "kind": "categorical", "dtype": "string", "categories": ["BOS", "LAX"]},
        {"name": "distance", "kind": "numeric", "dtype": "float64"},
        {"name": "hour", "kind": "numeric", "dtype": "int64"},
        {"name": "holiday", "kind": "numeric", "dtype": "bool"},
    ]
)
RULES = row_rules(SCHEMA, "origin")


def test_rules_name_every_feature_and_the_segment_column() -> None:
    assert [(r.name, r.kind) for r in RULES] == [
        ("dest", "text"), ("distance", "number"), ("hour", "number"), ("holiday", "flag"),
        ("origin", "segment"),
    ]  # fmt: skip


def test_missing_columns_are_named() -> None:
    check = check_frame(pd.DataFrame({"dest": ["BOS"], "hour": [1]}), RULES)
    assert check.missing == ["distance", "holiday", "origin"] and not check.ok


def test_a_text_in_a_numeric_csv_column_is_reported_on_its_cell() -> None:
    text = "dest,distance,hour,holiday,origin,id\n" + "".join(
        f"BOS,{'abc' if i == 16 else 100 + i},{i % 24},{i % 2 == 0},JFK,{i}\n" for i in range(30)
    )
    df = pd.read_csv(io.StringIO(text), dtype={"dest": "string", "origin": "string"})
    assert not pd.api.types.is_numeric_dtype(df["distance"])  # one bad cell: a text column
    check = check_frame(df, RULES, text_numbers=True)
    assert check.bad_rows == 1 and check.bad_per_column == {"distance": 1}
    (cell,) = check.bad
    assert (cell.row, cell.column, cell.value) == (16, "distance", "abc")
    assert cell.problem == EXPECTED["number"]
    assert check.frame["distance"].dtype == np.float64
    assert check.frame["distance"].iloc[15] == 115.0  # the other cells of the column parse
    assert check.frame["id"].equals(df["id"])  # columns the version does not use pass through


def test_json_rows_are_checked_as_strictly_as_the_server() -> None:
    df = pd.DataFrame(
        {
            "dest": ["BOS", 7, None, "LAX"],
            "distance": [1.5, "12", None, float("inf")],
            "hour": [1, 2, True, 4],
            "holiday": [True, 0, None, "yes"],
            "origin": ["JFK", 12, None, 1.5],
        }
    )
    check = check_frame(df, RULES)
    got = {(c.row, c.column) for c in check.bad}
    assert got == {
        (1, "dest"), (1, "distance"), (3, "distance"), (2, "hour"), (3, "holiday"),
        (3, "origin"),
    }  # fmt: skip
    assert check.bad_rows == 3
    # the server refuses the same cells, with the same words
    schema = RequestSchema(SCHEMA, "origin", max_instances=10)
    for i, record in enumerate(df.astype(object).to_dict("records")):
        row = {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in record.items()}
        body = json.dumps(row).encode()  # inf is written Infinity, which the server parses
        bad = {c.column: c.problem for c in check.bad if c.row == i}
        if not bad:
            schema.parse(b'{"features": ' + body + b"}")
            continue
        with pytest.raises(ApiError) as info:
            schema.parse(b'{"features": ' + body + b"}")
        refused = {f["field"].split(".")[-1]: f["problem"] for f in info.value.fields}
        assert refused == bad


def test_unseen_categories_are_counted_and_rejected_only_under_reject() -> None:
    df = pd.DataFrame(
        {"dest": ["BOS", "SFO", None, "XYZ", "SFO"], "distance": 1.0, "hour": 1,
         "holiday": False, "origin": "JFK"}
    )  # fmt: skip
    accepted = check_frame(df, RULES)
    assert accepted.ok and accepted.unseen == {"dest": 3}
    rejected = check_frame(df, RULES, reject_unseen=True)
    assert rejected.bad_rows == 3 and [c.row for c in rejected.bad] == [1, 3, 4]
    assert rejected.bad[0].problem == "unseen category (known: BOS, LAX)"
    assert SCHEMA.unseen_in_frame(df) == [(), ("dest",), (), ("dest",), ("dest",)]
    rows = df.astype(object).where(df.notna(), None).to_dict("records")
    _, unseen = SCHEMA.encode_rows_unseen(rows)
    assert unseen == [(), ("dest",), (), ("dest",), ("dest",)]


def test_the_server_refuses_unseen_categories_under_reject() -> None:
    schema = RequestSchema(SCHEMA, "origin", max_instances=10, unseen="reject")
    row = b'"distance": 1, "hour": 1, "holiday": null, "origin": "JFK"'
    schema.parse(b'{"features": {"dest": "BOS", ' + row + b"}}")
    with pytest.raises(ApiError) as info:
        schema.parse(
            b'{"instances": [{"dest": "BOS", ' + row + b'}, {"dest": "SFO", ' + row + b"}]}"
        )
    assert info.value.status == 422 and info.value.code == "unseen_category"
    assert info.value.fields == [
        {
            "field": "instances.1.dest",
            "problem": "unseen category (known: BOS, LAX)",
            "got": "'SFO'",
        }
    ]
    lenient = RequestSchema(SCHEMA, "origin", max_instances=10)
    lenient.parse(b'{"features": {"dest": "SFO", ' + row + b"}}")


def test_checking_300k_rows_is_fast(capsys: pytest.CaptureFixture[str]) -> None:
    n = 300_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "dest": pd.array(rng.choice(["BOS", "LAX", "SFO"], n), dtype="string"),
            "distance": rng.random(n).astype(str).astype(object),
            "hour": rng.integers(0, 24, n),
            "holiday": rng.random(n) < 0.1,
            "origin": pd.array(rng.choice(["JFK", "LGA"], n), dtype="string"),
        }
    )
    df.loc[123_456, "distance"] = "n/a"
    started = time.perf_counter()
    check = check_frame(df, RULES, text_numbers=True)
    seconds = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[rows] check_frame of {n} rows (one text column of numbers): {seconds:.2f} s")
    assert check.bad_rows == 1 and check.bad[0].row == 123_456
    assert seconds < 10


def test_a_numeric_segment_column_keeps_whole_numbers_as_integers() -> None:
    schema = FeatureSchema.from_dict([{"name": "month", "kind": "numeric", "dtype": "int64"}])
    rules = row_rules(schema, "month")
    csv = pd.read_csv(io.StringIO("month,x\n7,a\n,b\n8,c\n"))  # the null: floats
    assert csv["month"].dtype == np.float64
    check = check_frame(csv, rules, text_numbers=True)
    keys = check.frame["month"].astype("string").fillna("(null)").tolist()
    assert keys == ["7", "(null)", "8"]  # "7", as the server routes 7.0, not "7.0"
    mixed = check_frame(pd.DataFrame({"month": [7.0, 7.5]}), rules)
    assert mixed.frame["month"].astype("string").tolist() == ["7", "7.5"]


def test_a_manifest_without_a_policy_accepts() -> None:
    assert unseen_policy({"format": 1}) == "accept"  # packaged before the policy existed
    assert unseen_policy({"serving": {"unseen_categories": "reject"}}) == "reject"


def test_a_text_over_the_limit_is_refused_alike_by_the_server_and_batch_scoring() -> None:
    long_category = "L" * 300  # seen in training: allowed however long
    schema = FeatureSchema.from_dict(
        [{"name": "dest", "kind": "categorical", "dtype": "string", "categories": [long_category]}]
    )
    rules = row_rules(schema, "origin", max_text=8)
    assert [r.max_length for r in rules] == [300, 8]
    ok = ["BOS", "X" * 300, long_category]  # the dest texts the limit allows
    df = pd.DataFrame(
        {"dest": [*ok, "X" * 301, "BOS"], "origin": ["JFK", "JFK", "EWR", "JFK", "O" * 9]}
    )
    check = check_frame(df, rules)
    assert [(c.row, c.column, c.problem) for c in check.bad] == [
        (3, "dest", "a text of at most 300 characters (serving.max_text_length)"),
        (4, "origin", "a text of at most 8 characters (serving.max_text_length)"),
    ]
    server = RequestSchema(schema, "origin", max_instances=10, max_text=8)
    rows = df.to_dict("records")
    assert server.parse(json.dumps({"instances": rows[:3]}).encode())[0] == rows[:3]
    with pytest.raises(ApiError) as info:
        server.parse(json.dumps({"instances": rows}).encode())
    assert info.value.status == 422
    assert [(f["field"], f["problem"]) for f in info.value.fields] == [
        ("instances.3.dest", "a text of at most 300 characters (serving.max_text_length); got 301"),
        ("instances.4.origin", "a text of at most 8 characters (serving.max_text_length); got 9"),
    ]
    assert all(len(f["got"]) <= 60 for f in info.value.fields)


def test_a_manifest_without_a_text_limit_has_the_default() -> None:
    assert text_limit({}) == MAX_TEXT_LENGTH == 256
    assert text_limit({"serving": {"max_text_length": 16}}) == 16
