"""Delayed labels on a real server: real March flights are served (X-Request-ID = flight_id,
X-Kiln-Event-Time = the flight's hour), their real ``arr_delay`` arrives later through
`kiln labels add`, and the live MAE per version and origin equals numpy's over the same rows."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import httpx
import numpy as np
import pytest
import yaml
from serving_support import (
    FEATURES,
    PIPELINE,
    Trained,
    config,
    predictor,
    register_copy,
    set_stage,
    wait_for,
)

from kiln.config.monitor import MonitorConfig
from kiln.monitoring.findings import ALL
from kiln.monitoring.performance import unknown_labels, window_performance
from kiln.settings import Settings
from kiln.stores import read_captures
from kiln.stores.capture import open_window
from kiln.stores.labels import LabelStore
from tests.conftest import kiln_cli

pytestmark = pytest.mark.slow

NEW_YORK = ZoneInfo("America/New_York")
MARCH = (datetime(2013, 3, 1, tzinfo=UTC), datetime(2013, 4, 1, tzinfo=UTC))


def march_flights(warehouse: Path, n: int) -> list[dict[str, Any]]:
    """Real March flights that arrived (their arr_delay is known), with id, hour and delay."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        df = con.execute(
            f"SELECT flight_id, time_hour, arr_delay, {', '.join(FEATURES)} FROM flights"
            f" WHERE month = 3 AND arr_delay IS NOT NULL ORDER BY flight_id LIMIT {n}"
        ).df()
    rows = []
    for record in df.to_dict("records"):
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}
        rows.append(
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        )
    return rows


def event_time(flight: dict[str, Any]) -> str:
    """The flight's hour (naive New York time in the warehouse) as ISO 8601 with its offset."""
    return flight["time_hour"].to_pydatetime().replace(tzinfo=NEW_YORK).isoformat()


def test_labels_arrive_later_and_judge_the_version_that_answered(
    trained: Trained, serve, tmp_path: Path, warehouse: Path
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 2, "production")  # captures 100%
    server = serve(home)
    server.wait_ready()
    url = f"{server.url}/v1/pipelines/{PIPELINE}/predict"
    flights = march_flights(warehouse, 330)
    first, batch, second = flights[:150], flights[150:160], flights[160:330]

    answered: dict[str, tuple[int, str, float, float]] = {}  # id -> version, origin, pred, delay
    with httpx.Client(timeout=30) as client:

        def send(group: list[dict[str, Any]]) -> None:
            for f in group:
                r = client.post(
                    url,
                    json={"features": {k: f[k] for k in FEATURES}},
                    headers={
                        "X-Request-ID": str(f["flight_id"]),
                        "X-Kiln-Event-Time": event_time(f),
                    },
                )
                assert r.status_code == 200, r.text
                assert r.headers["x-kiln-captured"] == "1"
                body = r.json()
                answered[str(f["flight_id"])] = (
                    body["version"],
                    f["origin"],
                    body["prediction"],
                    f["arr_delay"],
                )

        send(first)
        # a batch: one event time for all its rows, each row captured as <id>:<index>
        r = client.post(
            url,
            json={"instances": [{k: f[k] for k in FEATURES} for f in batch]},
            headers={"X-Request-ID": "batch-1", "X-Kiln-Event-Time": event_time(batch[0])},
        )
        assert r.status_code == 200, r.text
        for i, (f, p) in enumerate(zip(batch, r.json()["predictions"], strict=True)):
            answered[f"batch-1:{i}"] = (2, f["origin"], p, f["arr_delay"])

        # bad headers: refused with 400 naming the header and the format, and captured
        row = {k: first[0][k] for k in FEATURES}
        for rid, value in (("bad-1", "yesterday"), ("bad-2", "2013-03-01T10:00:00")):
            r = client.post(
                url,
                json={"features": row},
                headers={"X-Request-ID": rid, "X-Kiln-Event-Time": value},
            )
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["code"] == "invalid_event_time"
            assert "X-Kiln-Event-Time" in error["message"] and "ISO 8601" in error["message"]
            assert r.headers["x-kiln-captured"] == "1"
        # an event in the future is recorded as the serving time
        r = client.post(
            url,
            json={"features": row},
            headers={"X-Request-ID": "future-1", "X-Kiln-Event-Time": "2999-01-01T00:00:00Z"},
        )
        assert r.status_code == 200

        newer = register_copy(home, 2)  # v2's package, captured at 100% too
        set_stage(home, newer, "production")  # it answers from now on; v2's requests stay v2's

        def newer_answers() -> bool:
            probe = client.post(url, json={"features": row}, headers={"X-Request-ID": "probe"})
            return bool(probe.json()["version"] == newer)

        wait_for(newer_answers, what=f"v{newer} in production")
        send(second)
    server.stop()  # flushes the captures

    root = Settings(home=home).artifact_root
    captures = {c["request_id"]: c for c in read_captures(root, PIPELINE, stage=None).to_pylist()}
    f0 = first[0]
    expected = f0["time_hour"].to_pydatetime().replace(tzinfo=NEW_YORK).astimezone(UTC)
    assert captures[str(f0["flight_id"])]["event_ts"] == expected
    assert {captures[f"batch-1:{i}"]["event_ts"] for i in range(10)} == {
        datetime.fromisoformat(event_time(batch[0])).astimezone(UTC)
    }
    for rid in ("bad-1", "bad-2"):
        assert captures[rid]["status"] == 400 and captures[rid]["event_ts"] is None
        assert "X-Kiln-Event-Time" in captures[rid]["error"]
    future = captures["future-1"]
    assert future["event_ts"] is not None and future["event_ts"] <= future["ts"]
    assert captures["probe"]["event_ts"] is None

    # the labels arrive: the real arr_delay of every flight, two unknown ids, one without label
    labels_csv = tmp_path / "labels.csv"
    with labels_csv.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["request_id", "arr_delay", "note"])
        for rid, (_, _, _, delay) in answered.items():
            writer.writerow([rid, delay, "real"])
        writer.writerow(["nope-1", 3.0, "unknown"])
        writer.writerow(["nope-2", 4.0, "unknown"])
        writer.writerow([str(second[0]["flight_id"]), "", "no label"])
    kiln_yaml = tmp_path / "kiln.yaml"
    kiln_yaml.write_text(yaml.safe_dump(config(warehouse, trees=20, sample_rate=1.0)))
    args = (
        "--home",
        str(home),
        "labels",
        "add",
        PIPELINE,
        str(labels_csv),
        "--config",
        str(kiln_yaml),
    )
    added = kiln_cli(*args, cwd=tmp_path)
    assert added.returncode == 0, added.stderr + added.stdout
    said = " ".join(added.stdout.split())
    stored = len(answered) + 2
    assert f"{stored} labels of {PIPELINE} stored" in said
    assert "0 replaced" in said
    assert "1 rows not stored" in said and "no label" in said
    assert "2 labelled keys of flights-serve match no captured request" in said

    cfg = MonitorConfig()  # min_labels 100: each version overall is judged, each origin not
    manifests = {v: predictor(home, v).manifest for v in (2, newer)}
    assert {v for v, *_ in answered.values()} == {2, newer}
    store = LabelStore(root)
    with open_window(root, PIPELINE, start=MARCH[0], end=MARCH[1]) as window:
        rows, counts = window_performance(window, store, manifests, "regression", cfg)
    assert unknown_labels(root, store, PIPELINE, cfg) == 2
    assert (counts.labelled, counts.unlabelled, counts.duplicates) == (len(answered), 0, 0)

    # numpy's MAE over the same rows, from the answers the server gave
    groups: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for version, origin, prediction, delay in answered.values():
        groups[(version, origin)].append((prediction, delay))
        groups[(version, ALL)].append((prediction, delay))
    got = {(r.version, r.segment): r for r in rows}
    assert set(got) == set(groups)
    for (version, segment), pairs in groups.items():
        p, y = np.array(pairs).T
        row = got[(version, segment)]
        assert row.metric == "mae"
        assert row.value == pytest.approx(float(np.mean(np.abs(y - p))), rel=1e-9)
        assert row.labelled == row.requests == len(pairs)
        manifest = manifests[version]
        reference = (
            manifest["metrics"]["overall"]["mae"]
            if segment == ALL
            else manifest["models"][segment]["metrics"]["mae"]
        )
        assert row.reference == pytest.approx(reference)
        assert row.change == pytest.approx((row.value - reference) / abs(reference))
        want = "alert" if row.change >= 0.10 else "warn" if row.change >= 0.05 else "ok"
        assert row.level == (want if len(pairs) >= 100 else "unjudged")
    assert {r.segment for r in rows if r.level != "unjudged"} == {ALL}

    # the same file again: every label replaced by itself, the figures unchanged
    again = kiln_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{stored} replaced an earlier label" in " ".join(again.stdout.split())
    with open_window(root, PIPELINE, start=MARCH[0], end=MARCH[1]) as window:
        rows_again, counts_again = window_performance(window, store, manifests, "regression", cfg)
    assert [(r.version, r.segment, r.value, r.labelled) for r in rows_again] == [
        (r.version, r.segment, r.value, r.labelled) for r in rows
    ]
    assert counts_again.labelled == counts.labelled
    assert counts_again.duplicates == len(answered)  # each key was sent twice; the newest counts
