"""The label store: newest label per key wins, re-adding a file changes nothing, duplicates and
bad rows are counted (never silently dropped), on a local folder and on another fsspec URL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kiln.errors import SchemaError
from kiln.stores.labels import LabelStore

T0 = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return f"memory://labels-{uuid.uuid4().hex}"


def latest(store: LabelStore, pipeline: str = "flights") -> dict[str, object]:
    table = store.read(pipeline)
    return dict(
        zip(table.column("key").to_pylist(), table.column("label").to_pylist(), strict=True)
    )


def test_newest_label_wins_and_the_same_file_twice_changes_nothing(root: str) -> None:
    store = LabelStore(root)
    first = pa.table({"key": ["a", "b", "a", "c"], "label": [1.0, 2.0, 3.0, 4.0]})
    result = store.add("flights", first, received_at=T0)
    assert (result.rows, result.duplicates, result.replaced, result.bad_rows) == (3, 1, 0, 0)
    assert latest(store) == {"a": 3.0, "b": 2.0, "c": 4.0}  # the last of a key in a file

    again = store.add("flights", first, received_at=T0 + timedelta(hours=1))
    assert (again.rows, again.duplicates, again.replaced) == (3, 1, 3)
    assert latest(store) == {"a": 3.0, "b": 2.0, "c": 4.0}

    fix = store.add("flights", pa.table({"key": ["b"], "label": [20.0]}), received_at=T0)
    assert fix.replaced == 1
    assert latest(store)["b"] == 2.0  # received earlier than the label it would replace
    store.add("flights", pa.table({"key": ["b"], "label": [21.0]}), received_at=T0 + timedelta(2))
    assert latest(store)["b"] == 21.0
    assert store.read("flights").column("sent").to_pylist() == [2, 4, 2]
    assert latest(store, "other") == {}  # pipelines are apart


def test_bad_rows_are_counted_with_their_reason_and_integer_keys_become_text(root: str) -> None:
    store = LabelStore(root)
    table = pa.table(
        {
            "key": pa.array([1, 2, None, 4, 5], pa.int64()),
            "label": [1.5, None, 3.0, float("nan"), float("inf")],
            "ignored": ["x"] * 5,
        }
    )
    result = store.add("flights", table)
    assert (result.rows, result.bad_rows) == (1, 4)
    assert [(b.row, b.key, b.reason) for b in result.bad] == [
        (1, "2", "no label"),
        (2, None, "no key"),
        (3, "4", "label nan is not a finite number"),
        (4, "5", "label inf is not a finite number"),
    ]
    assert latest(store) == {"1": 1.5}


def test_class_labels_stay_text_and_bad_columns_name_the_fix(root: str) -> None:
    store = LabelStore(root)
    store.add("iris", pa.table({"key": ["r1", "r2"], "label": ["setosa", "virginica"]}))
    assert latest(store, "iris") == {"r1": "setosa", "r2": "virginica"}
    with pytest.raises(SchemaError, match=r"no column 'label'.*columns: key, outcome"):
        store.add("iris", pa.table({"key": ["r1"], "outcome": [1.0]}))
    with pytest.raises(SchemaError, match="label column has type list"):
        store.add("iris", pa.table({"key": ["r1"], "label": [[1.0]]}))
    with pytest.raises(SchemaError, match="key column has type double"):
        store.add("iris", pa.table({"key": [1.5], "label": [1.0]}))


def test_files_are_written_whole_and_named_by_when_they_arrived(tmp_path: Path) -> None:
    store = LabelStore(str(tmp_path))
    result = store.add("flights", pa.table({"key": ["a"], "label": [1.0]}), received_at=T0)
    assert result.file is not None
    path = Path(result.file)
    assert path.parent == tmp_path / "labels" / "pipeline=flights"
    assert path.name.startswith(f"{int(T0.timestamp() * 1000)}-")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    written = pq.read_table(path)
    assert written.schema.names == ["key", "label", "received_at"]
    assert written.column("received_at").to_pylist() == [T0]
