"""The monitor in the loops: `kiln watch --once` and `kiln scheduler --once` monitor each
pipeline after the release tick, `kiln status` shows the monitoring state, and a failing
monitor is logged without stopping the loop."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from kiln.monitoring.hook import MonitorHook, refresh_gauges, serve_gauges
from kiln.monitoring.monitor import align
from kiln.settings import Settings
from kiln.stores import Stores
from tests.monitoring.monitor_support import P, flights, production, serve

DAY = timedelta(days=1)


@pytest.mark.slow
def test_watch_and_scheduler_monitor_and_status_shows_it(
    make_config,
    settings: Settings,
    stores: Stores,
    warehouse: Path,
    tmp_path: Path,
    cli,
    free_tcp_port: int,
) -> None:
    loaded = make_config(monitor={"window": "1d"}, schedule={"cron": "0 3 * * *"})
    version = production(settings, stores, loaded)
    home = ["--home", str(settings.home)]
    today = align(datetime.now(UTC), DAY)
    july = datetime(2013, 7, 1, tzinfo=UTC)
    # July 1-2's real flights, as if they had happened three and two days ago
    serve(settings, version, flights(warehouse, date(2013, 7, 1), date(2013, 7, 2)),
          shift=today - 3 * DAY - july)  # fmt: skip

    status = cli(*home, "status", cwd=tmp_path)
    assert status.returncode == 0 and "not monitored yet" in status.stdout

    watched = cli(*home, "watch", P, "--once", cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    assert f"{P}: monitor window {today - 3 * DAY:%Y-%m-%d} 00:00 UTC: alert" in watched.stdout
    assert f"{P}: monitor window {today - DAY:%Y-%m-%d} 00:00 UTC: no_traffic" in watched.stdout
    with stores.metadata.read() as uow:
        windows = uow.windows.list(P)
        worst = windows[1].worst
    assert [w.window_start for w in windows] == [today - 3 * DAY, today - 2 * DAY, today - DAY]
    assert worst is not None and worst.startswith(("drift:", "prediction:"))

    status = cli(*home, "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "monitoring" in status.stdout and "no traffic" in status.stdout  # the latest window

    # --metrics-port: the gauges of the stored state, refreshed after each pass
    server = serve_gauges(free_tcp_port)
    try:
        refresh_gauges(stores)
        text = httpx.get(f"http://127.0.0.1:{free_tcp_port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        server.server_close()
    assert f'kiln_monitor_state{{pipeline="{P}"}} -1.0' in text  # the latest: no traffic

    # the scheduler's pass monitors with the folder's kiln.yaml: a shorter window there
    folder = tmp_path / "pipelines"
    folder.mkdir()
    doc = yaml.safe_load(loaded.path.read_text())
    doc["monitor"]["window"] = "12h"
    (folder / "kiln.yaml").write_text(yaml.safe_dump(doc))
    ran = cli(*home, "scheduler", "--dir", str(folder), "--once", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert f"{P}: monitor window {today - 3 * DAY:%Y-%m-%d} 12:00 UTC" in ran.stderr
    with stores.metadata.read() as uow:
        halves = uow.windows.list(P, seconds=12 * 3600)
    half = timedelta(hours=12)
    closed = align(datetime.now(UTC), half)  # the windows that had closed when it ran
    expected = [today - 3 * DAY + i * half for i in range(8)]
    assert [h.window_start for h in halves] == [e for e in expected if e < closed]


@pytest.mark.slow
def test_a_failing_monitor_is_logged_and_the_loop_goes_on(
    make_config, settings: Settings, stores: Stores, warehouse: Path, caplog
) -> None:
    loaded = make_config(monitor={"window": "1d"})
    version = production(settings, stores, loaded)
    today = align(datetime.now(UTC), DAY)
    serve(settings, version, flights(warehouse, date(2013, 7, 1), date(2013, 7, 1)),
          shift=today - DAY - datetime(2013, 7, 1, tzinfo=UTC))  # fmt: skip
    # the version's manifest is gone from the artifact store (deleted by hand)
    digest = version.record.manifest_digest
    (Path(settings.artifact_root) / "objects" / digest[:2] / digest).unlink()
    hook = MonitorHook(settings, stores)
    said = hook(P)
    assert len(said) == 1 and said[0].startswith("monitor failed:")
    assert "manifest of flights-test v1" in said[0] and "missing" in said[0]
    assert "monitor of 'flights-test' failed" in caplog.text
    with stores.metadata.read() as uow:
        assert uow.windows.list(P) == []  # nothing half-stored; the next pass tries again


def test_a_pass_measures_storage_once_an_hour(
    make_config, settings: Settings, stores: Stores
) -> None:
    """Budgets and status see storage without anyone running `kiln cost`: a pass records a
    measurement when the newest is older than an hour, and only then."""
    import sqlalchemy as sa

    from kiln.monitoring.hook import STORAGE_EVERY
    from kiln.stores.metadata import tables as t

    loaded = make_config(monitor={"window": "1d"})
    production(settings, stores, loaded)

    def rows() -> list[tuple[str, datetime]]:
        with stores.metadata.read() as uow:
            return [(r.kind, r.measured_at) for r in uow.storage_usage.list(P)]

    before = rows()  # a trained version's history is rebuilt by the first measurement
    hook = MonitorHook(settings, stores)
    started = datetime.now(UTC)
    assert not [x for x in hook(P) if x.startswith("storage")]
    first = rows()
    newest = [kind for kind, at in first if at >= started]
    assert "packages" in newest and len(first) > len(before)
    hook(P)
    assert rows() == first  # measured a moment ago: not again
    back = STORAGE_EVERY + timedelta(minutes=1)
    with stores.metadata.engine.begin() as conn:  # as if it were measured over an hour ago
        found = conn.execute(sa.select(t.StorageUsage.id, t.StorageUsage.measured_at)).all()
        for row_id, at in found:
            conn.execute(
                sa.update(t.StorageUsage)
                .where(t.StorageUsage.id == row_id)
                .values(measured_at=at - back)
            )
    again = datetime.now(UTC)
    hook(P)
    assert sorted(kind for kind, at in rows() if at >= again) == sorted(newest)
