"""`kiln monitor` through the real command: a table per window most severe first, --json the
stored results, a pipeline with nothing in production said plainly, bad options named; exit 0
even when a window alerts."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from kiln.settings import Settings
from kiln.stores import Stores
from tests.monitoring.monitor_support import P, flights, production, serve

JULY = datetime(2013, 7, 1, tzinfo=UTC)


@pytest.mark.slow
def test_kiln_monitor_prints_and_stores_windows(
    make_config, settings: Settings, stores: Stores, warehouse: Path, tmp_path: Path, cli
) -> None:
    home = ["--home", str(settings.home)]
    empty = cli("--home", str(tmp_path / "empty"), "db", "upgrade", cwd=tmp_path)
    assert empty.returncode == 0, empty.stderr
    none = cli("--home", str(tmp_path / "empty"), "monitor", cwd=tmp_path)
    assert none.returncode == 0 and "no pipelines yet" in none.stdout

    loaded = make_config(monitor={"window": "1d", "latency": {"p99_ms": {"warn": 40, "alert": 45}}})
    version = production(settings, stores, loaded)
    rows = flights(warehouse, date(2013, 7, 1), date(2013, 7, 2))
    serve(settings, version, rows)
    until = (JULY + timedelta(days=2, hours=3)).isoformat()

    bad = cli(*home, "monitor", P, "--window", "7m", cwd=tmp_path)
    assert bad.returncode == 2 and "--window" in bad.stderr
    assert "does not divide a day" in bad.stderr
    wrong = cli(*home, "monitor", "weather", "--config", str(loaded.path), cwd=tmp_path)
    assert wrong.returncode != 0 and "is the config of pipeline 'flights-test'" in wrong.stderr

    # options before the pipeline, and the monitor settings of the kiln.yaml given
    done = cli(*home, "monitor", "--until", until, P, "--config", str(loaded.path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"{P} 2013-07-0") == 2  # one table per window
    assert "2013-07-01 00:00 .. 2013-07-02 00:00 UTC: alert" in done.stdout  # p99 of 1..50 ms
    assert "latency:p99" in done.stdout and "errors" in done.stdout
    # nothing new: the latest stored window, as JSON
    again = cli(*home, "monitor", P, "--until", until, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    (doc,) = json.loads(again.stdout)
    assert doc["stored_before"] is True and doc["start"].startswith("2013-07-02")
    served_july_2 = sum(1 for r in rows if r["time_hour"].date() == date(2013, 7, 2))
    assert doc["rows"] == served_july_2
    p99 = next(f for f in doc["findings"] if f["check"] == "latency:p99")
    assert p99["level"] == "alert" and p99["threshold"] == 45
    with stores.metadata.read() as uow:
        assert [w.window_start for w in uow.windows.list(P)] == [JULY, JULY + timedelta(days=1)]


def test_a_pipeline_with_nothing_in_production_is_said_plainly(
    make_config, settings: Settings, stores: Stores, tmp_path: Path, cli
) -> None:
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert(P, "tests@example.com", "", "kiln.yaml")
    done = cli("--home", str(settings.home), "monitor", P, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{P}: nothing in production, nothing to monitor" in done.stdout
