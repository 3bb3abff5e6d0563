"""The capture store: a non-blocking writer of Parquet files, read back with DuckDB."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kiln.errors import NotFoundError, StoreError
from kiln.stores import CaptureRecord, CaptureWriter, query_captures, read_captures
from kiln.stores.capture import CAPTURE_SCHEMA
from kiln.stores.capture._records import to_table

T0 = datetime(2024, 3, 1, 23, 59, 0, tzinfo=UTC)


def record(
    i: int,
    *,
    pipeline: str = "flights",
    ts: datetime | None = None,
    stage: str = "production",
    features: dict[str, Any] | None = None,
    **changes: Any,
) -> CaptureRecord:
    fields: dict[str, Any] = {
        "request_id": f"{pipeline}-{i}",
        "ts": ts or T0 + timedelta(milliseconds=i),
        "pipeline": pipeline,
        "version": 3,
        "stage": stage,
        "segment": "JFK" if i % 2 else None,
        "model": "segment:JFK" if i % 2 else "fallback:global",
        "fallback": i % 2 == 0,
        "features": {"distance": i, "carrier": "UA"} if features is None else features,
        "prediction": None if i % 7 == 0 else i / 10,
        "error": "model failed" if i % 7 == 0 else None,
        "latency_ms": 0.25 + i,
    }
    fields.update(changes)
    return CaptureRecord(**fields)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def write(root: str, records: list[CaptureRecord], **options: Any) -> CaptureWriter:
    with CaptureWriter(root, writer_id="test-1", **options) as writer:
        for r in records:
            assert writer.offer(r)
    assert writer.written == len(records)
    return writer


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "captures").rglob("*") if p.is_file())


@pytest.fixture
def root(tmp_path: Path) -> str:
    return str(tmp_path / "kiln-home")


def test_round_trip_across_pipelines_and_dates(root: str) -> None:
    plus_two = timezone(timedelta(hours=2))
    records = [
        record(1, ts=T0),
        record(2, ts=T0 + timedelta(minutes=2)),  # 2024-03-02 UTC
        record(3, ts=datetime(2024, 3, 2, 1, 0, tzinfo=plus_two)),  # 2024-03-01 23:00 UTC
        record(4, pipeline="taxi-fares", ts=T0, stage="shadow"),
        record(5, pipeline="taxi-fares", ts=T0 + timedelta(days=1)),
    ]
    write(root, records)

    folders = {p.parent.relative_to(Path(root)).as_posix() for p in all_files(Path(root))}
    assert folders == {
        "captures/pipeline=flights/date=2024-03-01",
        "captures/pipeline=flights/date=2024-03-02",
        "captures/pipeline=taxi-fares/date=2024-03-01",
        "captures/pipeline=taxi-fares/date=2024-03-02",
    }
    for path in all_files(Path(root)):
        assert path.name.startswith("test-1-") and path.suffix == ".parquet"

    flights = read_captures(root, "flights")
    assert flights.column_names == [
        "request_id", "ts", "pipeline", "version", "stage", "segment", "model", "fallback",
        "features", "prediction", "error", "latency_ms", "label", "probabilities", "unseen",
        "status", "event_ts",
    ]  # fmt: skip
    assert flights.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert flights.schema.field("version").type == pa.int32()
    got = flights.to_pylist()
    expected = sorted(records[:3], key=lambda r: r.ts)
    assert [g["request_id"] for g in got] == [r.request_id for r in expected]
    for g, r in zip(got, expected, strict=True):
        assert g["ts"] == r.ts.astimezone(UTC)
        assert json.loads(g.pop("features")) == r.features
        assert g == {
            "request_id": r.request_id, "ts": g["ts"], "pipeline": r.pipeline,
            "version": r.version, "stage": r.stage, "segment": r.segment, "model": r.model,
            "fallback": r.fallback, "prediction": r.prediction, "error": r.error,
            "latency_ms": r.latency_ms, "label": None, "probabilities": None, "unseen": [],
            "status": 200, "event_ts": None,
        }  # fmt: skip

    taxi = read_captures(root, "taxi-fares", stage=None)
    assert taxi.column("request_id").to_pylist() == ["taxi-fares-4", "taxi-fares-5"]
    assert taxi.column("stage").to_pylist() == ["shadow", "production"]
    assert read_captures(root, "taxi-fares", stage="shadow").num_rows == 1
    assert read_captures(root, "taxi-fares", stage="canary").num_rows == 0
    with pytest.raises(ValueError, match="stage 'staging'"):
        read_captures(root, "taxi-fares", stage="staging")


def test_unseen_categories_round_trip_and_older_files_read_as_null(root: str) -> None:
    """A file written before the ``unseen`` column existed reads beside the new ones (null),
    alone too, by ``read_captures`` and ``query_captures``."""
    later = ("label", "probabilities", "unseen", "status", "event_ts")  # added since the first
    legacy = pa.schema([f for f in CAPTURE_SCHEMA if f.name not in later])
    folder = Path(root) / "captures" / "pipeline=flights" / "date=2024-03-01"
    folder.mkdir(parents=True)
    table = pa.table(
        {
            "request_id": ["old-1"], "ts": [T0 - timedelta(hours=1)], "version": [2],
            "stage": ["production"], "segment": ["JFK"], "model": ["JFK"], "fallback": [False],
            "features": ['{"dest": "LAX"}'], "prediction": [1.5], "error": [None],
            "latency_ms": [1.0],
        },
        schema=legacy,
    )  # fmt: skip
    pq.write_table(table, folder / "old.parquet")
    alone = read_captures(root, "flights")
    assert alone.column("unseen").to_pylist() == [None]
    assert alone.column("label").to_pylist() == [None]
    assert query_captures(root, "SELECT unseen FROM captures").column(0).to_pylist() == [None]

    write(root, [record(1, unseen=("dest",)), record(3)])
    both = read_captures(root, "flights")
    assert both.column("request_id").to_pylist() == ["old-1", "flights-1", "flights-3"]
    assert both.column("unseen").to_pylist() == [None, ["dest"], []]
    counted = query_captures(
        root, "SELECT count(*) FROM captures WHERE list_contains(unseen, 'dest')"
    )
    assert counted.column(0).to_pylist() == [1]


def test_canary_captures_are_read_by_stage(root: str) -> None:
    write(root, [record(i, stage="canary" if i % 2 else "production") for i in range(6)])
    canary = read_captures(root, "flights", stage="canary")
    assert canary.column("request_id").to_pylist() == ["flights-1", "flights-3", "flights-5"]
    assert set(canary.column("stage").to_pylist()) == {"canary"}
    assert read_captures(root, "flights", stage=None).num_rows == 6


@pytest.mark.parametrize("ignore_timezone", ["0", "1"])
def test_offsets_survive_pyarrow_ignore_timezone(
    root: str, ignore_timezone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``import pandera`` sets PYARROW_IGNORE_TIMEZONE=1, under which Arrow drops offsets."""
    monkeypatch.setenv("PYARROW_IGNORE_TIMEZONE", ignore_timezone)
    tokyo = timezone(timedelta(hours=9))
    write(root, [record(1, ts=datetime(2024, 3, 2, 8, 30, tzinfo=tokyo))])
    (got,) = read_captures(root, "flights").column("ts").to_pylist()
    assert got == datetime(2024, 3, 1, 23, 30, tzinfo=UTC)
    assert (Path(root) / "captures/pipeline=flights/date=2024-03-01").is_dir()


@pytest.mark.parametrize("max_queue", [100_000, 64])
def test_exactly_the_accepted_records_are_on_disk(root: str, max_queue: int) -> None:
    writer = CaptureWriter(
        root, writer_id="w", max_queue=max_queue, flush_rows=500, flush_seconds=0.01
    )
    writer.start()
    accepted: list[list[str]] = [[], []]

    def produce(thread: int) -> None:
        for i in range(10_000):
            r = record(thread * 10_000 + i, ts=T0 + timedelta(seconds=i))  # spans two dates
            if writer.offer(r):
                accepted[thread].append(r.request_id)

    threads = [threading.Thread(target=produce, args=(t,)) for t in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()

    ids = accepted[0] + accepted[1]
    assert writer.written + writer.dropped == 20_000
    assert writer.written == len(ids)
    assert writer.queued == 0 and writer.errors == 0 and writer.rejected == 0
    if max_queue == 64:
        assert writer.dropped > 0
    else:
        assert writer.dropped == 0
    on_disk = pa.concat_tables(pq.read_table(p) for p in all_files(Path(root)))
    assert on_disk.num_rows == writer.written
    assert sorted(on_disk.column("request_id").to_pylist()) == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_features_round_trip_as_json(root: str) -> None:
    features: list[dict[str, Any]] = [
        {"distance": 1_000, "carrier": "UA", "dep_delay": None, "ratio": 0.125, "ok": True},
        {"quote": 'say "hi"\n', "unicode": "Zürich ✈", "empty": "", "nested": {"a": [1, None]}},
        {},
        {"day": date(2024, 3, 1), "pair": (1, 2), 7: "non-str key", "big": 2**70},
    ]
    write(root, [record(i, features=f) for i, f in enumerate(features)])
    got = [json.loads(s) for s in read_captures(root, "flights").column("features").to_pylist()]
    assert got[:3] == features[:3]
    assert got[3] == {"day": "2024-03-01", "pair": [1, 2], "7": "non-str key", "big": 2**70}


def test_last_and_since(root: str) -> None:
    # 12 captures over 4 days, 3 a day, every third one in shadow
    records = [
        record(i, ts=T0 + timedelta(hours=8 * i), stage="shadow" if i % 3 == 2 else "production")
        for i in range(12)
    ]
    write(root, records)
    production = [r for r in records if r.stage == "production"]

    def ids(table: pa.Table) -> list[str]:
        return list(table.column("request_id").to_pylist())

    assert ids(read_captures(root, "flights")) == [r.request_id for r in production]
    assert ids(read_captures(root, "flights", last=3)) == [r.request_id for r in production[-3:]]
    assert ids(read_captures(root, "flights", last=7)) == [r.request_id for r in production[-7:]]
    assert ids(read_captures(root, "flights", last=100)) == [r.request_id for r in production]
    assert ids(read_captures(root, "flights", last=4, stage=None)) == [
        r.request_id for r in records[-4:]
    ]
    assert read_captures(root, "flights", last=0).num_rows == 0

    since = records[5].ts
    assert ids(read_captures(root, "flights", since=since, stage=None)) == [
        r.request_id for r in records[5:]
    ]
    assert (
        ids(read_captures(root, "flights", since=since, last=2))
        == [r.request_id for r in production if r.ts >= since][-2:]
    )
    later = records[-1].ts + timedelta(days=3)
    assert read_captures(root, "flights", since=later).num_rows == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        read_captures(root, "flights", since=datetime(2024, 3, 1))


def test_a_concurrent_reader_never_sees_a_partial_file(root: str) -> None:
    writer = CaptureWriter(root, writer_id="w", flush_rows=250, flush_seconds=0.005)
    writer.start()
    counts: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                counts.append(read_captures(root, "flights", stage=None).num_rows)
            except NotFoundError:
                continue
            except BaseException as e:
                failures.append(e)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(20_000):
        assert writer.offer(record(i))
        if i % 500 == 0:
            time.sleep(0.002)
    writer.close()
    wait_until(lambda: len(counts) >= 3)
    stop.set()
    thread.join()

    assert failures == []
    assert counts == sorted(counts), "a reader saw fewer rows than before"
    assert read_captures(root, "flights", stage=None).num_rows == writer.written == 20_000
    assert all(p.suffix == ".parquet" for p in all_files(Path(root)))  # no temporary file left


def test_query_captures_with_group_by(root: str) -> None:
    records = [record(i, stage="shadow" if i < 3 else "production") for i in range(10)]
    records += [record(i, pipeline="taxi-fares", ts=T0 + timedelta(days=1)) for i in range(4)]
    write(root, records)
    table = query_captures(
        root,
        "SELECT pipeline, date, stage, count(*) AS n, avg(latency_ms) AS latency"
        " FROM captures GROUP BY ALL ORDER BY pipeline, stage",
    )
    rows = table.to_pylist()
    assert [(r["pipeline"], r["date"], r["stage"], r["n"]) for r in rows] == [
        ("flights", date(2024, 3, 1), "production", 7),
        ("flights", date(2024, 3, 1), "shadow", 3),
        ("taxi-fares", date(2024, 3, 2), "production", 4),
    ]
    assert rows[1]["latency"] == pytest.approx(1.25)
    carriers = query_captures(root, "SELECT DISTINCT features->>'carrier' AS c FROM captures")
    assert carriers.column("c").to_pylist() == ["UA"]


def test_errors_name_the_pipeline_the_folder_and_the_fix(root: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        read_captures(root, "flights")
    message = str(caught.value)
    assert "'flights'" in message
    assert os.path.join(root, "captures", "pipeline=flights") in message
    assert "capture.sample_rate > 0" in message
    with pytest.raises(NotFoundError, match=r"(?s)no captures in .*capture\.sample_rate > 0"):
        query_captures(root, "SELECT count(*) FROM captures")

    write(root, [record(1)])
    with pytest.raises(NotFoundError, match="'taxi'"):
        read_captures(root, "taxi")
    with pytest.raises(StoreError, match="nonsense") as bad_sql:
        query_captures(root, "SELECT nonsense FROM captures")
    assert "Binder Error" in str(bad_sql.value)
    with pytest.raises(StoreError, match="syntax error"):
        query_captures(root, "SELEC 1")
    with pytest.raises(ValueError, match="invalid pipeline name"):
        read_captures(root, "../flights")


def test_records_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        record(1, ts=datetime(2024, 3, 1))
    with pytest.raises(ValueError, match="stage 'staging'"):
        record(1, stage="staging")
    assert record(1, stage="canary").stage == "canary"
    with pytest.raises(ValueError, match="invalid pipeline name"):
        record(1, pipeline="a/b")
    with pytest.raises(ValueError, match="writer_id"):
        CaptureWriter("/tmp/unused", writer_id="a/b")


def test_write_failures_keep_the_rows_and_the_thread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "home"
    root.mkdir()
    (root / "captures").write_text("a file where the folder should be")
    writer = CaptureWriter(str(root), writer_id="w", max_queue=10, flush_seconds=0.005)
    with caplog.at_level(logging.WARNING, logger="kiln.stores.captures"):
        writer.start()
        accepted = [writer.offer(record(i)) for i in range(15)]
        assert accepted == [True] * 10 + [False] * 5
        wait_until(lambda: writer.errors >= 3)
        assert writer.queued == 10 and writer.written == 0 and writer.dropped == 5
        assert not writer.offer(record(99))  # the kept rows still count against max_queue

        (root / "captures").unlink()
        wait_until(lambda: writer.written == 10)
        assert writer.offer(record(100))
        writer.close()
    assert writer.written == 11 and writer.queued == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "a failing store is logged once"
    assert "cannot write" in errors[0].getMessage()
    assert any("again" in r.getMessage() for r in caplog.records)
    assert read_captures(str(root), "flights").num_rows == 11


def test_records_that_cannot_be_stored_are_rejected_not_retried(
    root: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="kiln.stores.captures"):
        writer = CaptureWriter(root, writer_id="w")
        with writer:
            for i in range(5):
                writer.offer(record(i))
            writer.offer(record(5, version="three"))
            writer.offer(record(6, request_id=None))
    assert (writer.written, writer.rejected, writer.queued) == (5, 2, 0)
    assert "rejected 2 captures" in caplog.text
    assert read_captures(root, "flights").num_rows == 5


def test_close_flushes_and_is_idempotent(root: str) -> None:
    writer = CaptureWriter(root, writer_id="w", flush_seconds=3600)
    for i in range(3):
        assert writer.offer(record(i))  # queued before start
    writer.close()  # never started: close still writes them
    assert writer.written == 3
    writer.close()
    assert not writer.offer(record(9))
    assert writer.dropped == 1
    with pytest.raises(StoreError, match="closed"):
        writer.start()

    started = CaptureWriter(root, writer_id="v", flush_rows=10**6, flush_seconds=3600)
    started.start()
    for i in range(10, 1_010):
        started.offer(record(i))
    started.close()
    assert started.written == 1_000
    assert read_captures(root, "flights").num_rows == 1_003


@pytest.fixture
def memory_root() -> Iterator[str]:
    path = f"/kiln-captures-{uuid.uuid4().hex}"
    yield f"memory://{path}"
    memory = fsspec.filesystem("memory")
    if memory.exists(path):
        memory.rm(path, recursive=True)


def test_any_fsspec_url(memory_root: str) -> None:
    write(memory_root, [record(i) for i in range(4)] + [record(9, pipeline="taxi")])
    assert read_captures(memory_root, "flights", last=2).column("request_id").to_pylist() == [
        "flights-2",
        "flights-3",
    ]
    counts = query_captures(memory_root, "SELECT pipeline, count(*) AS n FROM captures GROUP BY 1")
    assert dict(zip(*counts.to_pydict().values(), strict=True)) == {"flights": 4, "taxi": 1}


def test_measure_offer_and_read(root: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Figures, not assertions: offer() must cost microseconds; reading 100k well under 1 s."""
    records = [record(i, ts=T0 + timedelta(milliseconds=i)) for i in range(100_000)]
    writer = CaptureWriter(root, writer_id="bench", max_queue=200_000, flush_rows=10**6)
    writer.start()
    started = time.perf_counter()
    for r in records:
        writer.offer(r)
    offer_us = (time.perf_counter() - started) / len(records) * 1e6
    writer.close()
    assert writer.written == 100_000

    started = time.perf_counter()
    read_all = read_captures(root, "flights")
    read_all_s = time.perf_counter() - started
    started = time.perf_counter()
    read_last = read_captures(root, "flights", last=10_000)
    read_last_s = time.perf_counter() - started
    assert (read_all.num_rows, read_last.num_rows) == (100_000, 10_000)
    with capsys.disabled():
        print(
            f"\n[captures] offer(): {offer_us:.2f} us/call;"
            f" read_captures 100k rows: {read_all_s * 1000:.0f} ms;"
            f" last=10,000 of 100k: {read_last_s * 1000:.0f} ms"
        )


def test_multiclass_captures_are_read_alongside_files_written_before_them(root: str) -> None:
    """Files written before ``label`` and ``probabilities`` existed read as nulls in them."""
    folder = Path(root) / "captures" / "pipeline=flights" / "date=2024-03-01"
    folder.mkdir(parents=True)
    old_schema = pa.schema([f for f in CAPTURE_SCHEMA if f.name not in ("label", "probabilities")])
    old = to_table([record(1)]).select(old_schema.names).cast(old_schema)
    pq.write_table(old, folder / "old-writer.parquet")
    assert read_captures(root, "flights")["label"].to_pylist() == [None]  # only old files

    proba = {"early": 0.2, "late": 0.5, "very_late": 0.3}
    write(root, [record(2, label="late", probabilities=proba, prediction=0.5)])
    table = read_captures(root, "flights")
    assert table.num_rows == 2
    assert table["label"].to_pylist() == [None, "late"]
    assert table["probabilities"].type == pa.map_(pa.string(), pa.float64())
    assert [None if p is None else dict(p) for p in table["probabilities"].to_pylist()] == [
        None,
        proba,
    ]
    got = query_captures(root, "SELECT label, probabilities['very_late'] AS p FROM captures")
    assert sorted(map(str, got.to_pylist()), key=len) == sorted(
        map(str, [{"label": None, "p": None}, {"label": "late", "p": 0.3}]), key=len
    )


TYPES = pa.struct([("distance", pa.float64()), ("carrier", pa.string()), ("origin", pa.string())])
BEFORE = Path(__file__).parent / "data" / "captures-before-status-and-inputs.parquet"
"""Written by the capture writer of Kiln before ``status`` and ``inputs`` (commit 77de641):
old-1, old-2 answered; old-3 refused 422, old-4 400, old-5 413 (error text only)."""


def typed(i: int, features: dict[str, Any], *, status: int = 200, **changes: Any) -> CaptureRecord:
    refused = status != 200
    return record(
        i,
        features=features,
        status=status,
        feature_types=changes.pop("feature_types", TYPES),
        prediction=None if refused else i / 10,
        error=f"{status} invalid_input: bad" if refused else None,
        **changes,
    )


def test_answered_features_are_stored_typed_and_refused_ones_as_json(root: str) -> None:
    """DuckDB aggregates the typed features without parsing JSON; a refused request (or a
    value that does not fit its type) keeps its features as JSON text; ``status`` is typed."""
    write(
        root,
        [
            typed(1, {"distance": 1089.0, "carrier": "UA", "origin": "JFK"}),
            typed(2, {"distance": None, "carrier": "AA", "origin": "JFK"}),
            typed(3, {"distance": 11.0, "carrier": "B6", "origin": "LGA"}),
            typed(4, {"distance": "far", "origin": "JFK"}, status=422),
            typed(5, {"distance": "far", "carrier": "UA", "origin": "JFK"}),  # not of its type
            typed(6, {"distance": 1.0, "carrier": "UA"}),  # a key short: not typed either
        ],
    )
    (path,) = all_files(Path(root))
    stored = pq.read_table(path)
    assert stored.schema.field("inputs").type == TYPES
    assert stored.schema.field("status").type == pa.int16()
    assert stored.column("status").to_pylist() == [200, 200, 200, 422, 200, 200]
    texts = stored.column("features").to_pylist()
    assert texts[:3] == [None, None, None]
    assert [json.loads(t) for t in texts[3:]] == [
        {"distance": "far", "origin": "JFK"},
        {"distance": "far", "carrier": "UA", "origin": "JFK"},
        {"distance": 1.0, "carrier": "UA"},
    ]
    summed = query_captures(
        root,
        "SELECT inputs.origin, count(inputs.distance) AS n, sum(inputs.distance) AS total"
        " FROM captures WHERE status = 200 AND inputs IS NOT NULL GROUP BY 1 ORDER BY 1",
    )
    assert summed.to_pylist() == [
        {"origin": "JFK", "n": 1, "total": 1089.0},
        {"origin": "LGA", "n": 1, "total": 11.0},
    ]
    read = read_captures(root, "flights")
    assert read.schema.field("status").type == pa.int16()
    assert [json.loads(t) for t in read.column("features").to_pylist()] == [
        {"distance": 1089.0, "carrier": "UA", "origin": "JFK"},
        {"distance": None, "carrier": "AA", "origin": "JFK"},
        {"distance": 11.0, "carrier": "B6", "origin": "LGA"},
        *[json.loads(t) for t in texts[3:]],
    ]


def test_versions_with_other_features_go_to_their_own_files_and_keep_their_keys(
    root: str,
) -> None:
    """One file per version's feature types; read together (DuckDB unions their structs),
    each request's JSON still holds only the keys it sent."""
    other = pa.struct([("distance", pa.float64()), ("dest", pa.string())])
    write(
        root,
        [
            typed(1, {"distance": 1.0, "carrier": "UA", "origin": "JFK"}),
            typed(2, {"distance": 2.0, "dest": "LAX"}, feature_types=other, version=4),
            typed(3, {"distance": 3.0, "carrier": "AA", "origin": "EWR"}),
        ],
    )
    assert len(all_files(Path(root))) == 2
    read = read_captures(root, "flights", last=3)
    assert [json.loads(t) for t in read.column("features").to_pylist()] == [
        {"distance": 1.0, "carrier": "UA", "origin": "JFK"},
        {"distance": 2.0, "dest": "LAX"},
        {"distance": 3.0, "carrier": "AA", "origin": "EWR"},
    ]
    dests = query_captures(root, "SELECT inputs.dest FROM captures WHERE version = 4")
    assert dests.column(0).to_pylist() == ["LAX"]


def test_files_written_before_status_and_typed_features_read_beside_new_ones(root: str) -> None:
    """A file of the previous writer (committed fixture): features JSON, no status, no
    inputs; read alone and beside typed files by ``read_captures`` and ``query_captures``."""
    folder = Path(root) / "captures" / "pipeline=flights" / "date=2024-02-29"
    folder.mkdir(parents=True)
    (folder / "old.parquet").write_bytes(BEFORE.read_bytes())
    alone = read_captures(root, "flights")
    assert alone.column("status").to_pylist() == [None] * 5
    assert json.loads(alone.column("features")[0].as_py()) == {
        "distance": 1089.0, "carrier": "UA", "origin": "JFK"
    }  # fmt: skip
    viewed = query_captures(root, "SELECT count(*), count(status) FROM captures")
    assert viewed.to_pylist() == [{"count_star()": 5, "count(status)": 0}]

    write(root, [typed(1, {"distance": 7.0, "carrier": "UA", "origin": "JFK"})])
    both = read_captures(root, "flights")
    assert both.column("request_id").to_pylist() == [f"old-{i}" for i in range(1, 6)] + [
        "flights-1"
    ]
    assert both.column("status").to_pylist() == [None] * 5 + [200]
    assert json.loads(both.column("features")[1].as_py()) == {
        "distance": None, "carrier": "AA", "origin": "JFK"
    }  # fmt: skip
    assert json.loads(both.column("features")[5].as_py()) == {
        "distance": 7.0, "carrier": "UA", "origin": "JFK"
    }  # fmt: skip
    typed_rows = query_captures(
        root, "SELECT request_id, inputs.distance FROM captures WHERE inputs IS NOT NULL"
    )
    assert typed_rows.to_pylist() == [{"request_id": "flights-1", "distance": 7.0}]
