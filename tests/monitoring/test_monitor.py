"""The monitor pass on a real flights version serving real July flights: windows aligned by
event time, closed only, stored once, a window without traffic stored as such, errors judged,
a corrupt capture file named, and at most MAX_WINDOWS per pass."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from kiln.monitoring import monitor as monitor_module
from kiln.monitoring.findings import ALL, WindowResult
from kiln.monitoring.monitor import Monitor, align
from kiln.settings import Settings
from kiln.stores import Stores, open_stores
from kiln.stores.labels import LabelStore
from tests.monitoring.monitor_support import P, flights, production, serve

JULY = datetime(2013, 7, 1, tzinfo=UTC)


def test_align_is_since_the_epoch() -> None:
    day = timedelta(days=1)
    assert align(datetime(2013, 7, 2, 23, 59, tzinfo=UTC), day) == datetime(2013, 7, 2, tzinfo=UTC)
    assert align(datetime(2013, 7, 2, 7, 10, tzinfo=UTC), timedelta(hours=6)) == datetime(
        2013, 7, 2, 6, tzinfo=UTC
    )


@pytest.mark.slow
def test_a_monitor_pass_over_real_flights(
    make_config, settings: Settings, stores: Stores, warehouse: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    loaded = make_config(monitor={"window": "1d"})
    version = production(settings, stores, loaded)
    served = flights(warehouse, date(2013, 7, 1), date(2013, 7, 3))
    served += flights(warehouse, date(2013, 7, 5), date(2013, 7, 5))  # July 4: no traffic
    day_of = [r["time_hour"].date() for r in served]
    on_july_2 = [i for i, d in enumerate(day_of) if d == date(2013, 7, 2)]
    failing = set(on_july_2[::10])  # one in ten of July 2 answered 500: over the 5% alert
    answers = serve(settings, version, served, failing=failing)
    per_day = Counter(day_of)

    monitor = Monitor(settings, stores)
    cfg = loaded.config
    results = monitor.run(P, cfg, now=JULY + timedelta(days=5, hours=12))
    assert [r.start for r in results] == [JULY + timedelta(days=i) for i in range(5)]
    assert all(r.end - r.start == timedelta(days=1) for r in results)  # July 6 is still open
    days = [(JULY + timedelta(days=i)).date() for i in range(5)]
    assert [r.rows for r in results] == [per_day[d] for d in days]
    assert [r.state for r in results][3] == "no_traffic"
    assert results[3].findings == [] and results[3].latency == []
    assert monitor.last.computed == 5

    july_2 = results[1]
    errors = next(f for f in july_2.findings if f.check == "errors")
    n_2 = per_day[date(2013, 7, 2)]
    assert errors.level == "alert" and errors.value == pytest.approx(len(failing) / n_2)
    assert july_2.state == "alert" and july_2.worst is not None
    overall = next(r for r in july_2.latency if r.segment == ALL)
    assert (overall.version, overall.requests) == (version.number, n_2)
    assert overall.errors == len(failing)
    assert {r.segment for r in july_2.latency} == {"EWR", "JFK", "LGA", ALL}
    july_1 = results[0]
    assert next(f for f in july_1.findings if f.check == "errors").level == "ok"
    # July's weather against January-February's: the temperature drifts in every window
    for r in (july_1, july_2):
        temp = next(f for f in r.findings if f.check == "drift:temp:__all__")
        assert temp.level == "alert" and temp.value is not None and temp.value > 0.25
        assert not any("not computed" in n for n in r.notes)
    # two windows in a row (monitor.consecutive 2) open the episode once, notified by the log:
    # one episode for the pipeline's inputs (monitor.drift.alert_by: pipeline, the default)
    # that names every drifted feature and segment, temp among them
    opened = [c.alert for c in monitor.last.alert_changes if c.kind == "opened"]
    assert [a.check for a in opened].count("drift") == 1
    drifted = next(a for a in opened if a.check == "drift")
    figures = {(f["feature"], f["segment"]) for f in drifted.details["figures"]}
    assert ("temp", ALL) in figures and "temp" in drifted.message
    assert not any(a.check.startswith("drift:") for a in opened)
    assert "errors" not in [a.check for a in opened]  # one window over: pending, then dropped
    with stores.metadata.read() as uow:
        live = {a.check: a.status for a in uow.alerts.list(P, status=["open"])}
    assert live.get("drift") == "open"
    sent = monitor.deliver(P, cfg, lambda: JULY + timedelta(days=5, hours=12))
    assert len(sent.delivered) >= 1 and not sent.failed
    assert monitor.deliver(P, cfg, lambda: JULY + timedelta(days=5, hours=12)).attempted == 0

    with stores.metadata.read() as uow:
        stored = uow.windows.list(P)
    assert [(w.window_start, w.rows, w.state) for w in stored] == [
        (r.start, r.rows, r.state) for r in results
    ]
    assert stored[1].worst == july_2.worst.check
    assert WindowResult.from_dict(stored[1].summary).findings == july_2.findings

    # stored windows are not computed again, with or without --since
    assert monitor.run(P, cfg, now=JULY + timedelta(days=5, hours=23)) == []
    assert monitor.run(P, cfg, now=JULY + timedelta(days=5, hours=23), since=JULY) == []
    # labels of July 1 arrive later: that window's live MAE is recomputed, its row updated
    labelled = [
        i for i, r in enumerate(served)
        if day_of[i] == date(2013, 7, 1) and r["arr_delay"] is not None and answers[i] is not None
    ]  # fmt: skip
    LabelStore(settings.artifact_root).add(
        P,
        pa.table({
            "key": [str(served[i]["flight_id"]) for i in labelled],
            "label": [float(served[i]["arr_delay"]) for i in labelled],
        }),
    )  # fmt: skip
    recomputed = monitor.run(P, cfg, now=JULY + timedelta(days=5, hours=23))
    # every window with traffic computed before the labels arrived (July 4 had none)
    assert [r.start for r in recomputed] == [JULY + timedelta(days=i) for i in (0, 1, 2, 4)]
    assert (monitor.last.recomputed, monitor.last.computed) == (4, 0)
    again = recomputed[0]
    live = next(p for p in again.performance if p.segment == ALL)
    truth = np.array([served[i]["arr_delay"] for i in labelled], dtype=float)
    predicted = np.array([answers[i] for i in labelled], dtype=float)
    assert live.labelled == len(labelled) and live.metric == "mae"
    assert live.value == pytest.approx(np.mean(np.abs(truth - predicted)))
    assert any(f.check == "performance:mae:__all__" for f in again.findings)
    with stores.metadata.read() as uow:
        days_stored = uow.windows.list(P)
    assert len(days_stored) == 5 and days_stored[0].id == stored[0].id
    assert WindowResult.from_dict(days_stored[0].summary).performance == again.performance
    assert monitor.run(P, cfg, now=JULY + timedelta(days=5, hours=23)) == []  # once only

    # the next closed window (no traffic), and a corrupt capture file named and skipped
    folder = next((Path(settings.artifact_root) / "captures" / f"pipeline={P}").iterdir())
    bad = folder / "zz-corrupt.parquet"
    bad.write_bytes(b"PAR1 not parquet")
    (july_6,) = monitor.run(P, cfg, now=JULY + timedelta(days=6, hours=1))
    assert july_6.start == JULY + timedelta(days=5) and july_6.state == "no_traffic"
    assert july_6.skipped.keys() == {str(bad)}
    assert any(str(bad) in note for note in july_6.notes)
    with stores.metadata.read() as uow:
        assert len(uow.windows.list(P)) == 6

    with stores.metadata.read() as uow:
        daily_alerts = {a.check: a.status for a in uow.alerts.list(P, status=["open"])}
    # hourly windows, at most MAX_WINDOWS per pass: the next pass goes on from there
    monkeypatch.setattr(monitor_module, "MAX_WINDOWS", 2)
    hour = timedelta(hours=1)
    h0 = min(r["time_hour"] for r in served).to_pydatetime().replace(tzinfo=UTC)
    now = h0 + timedelta(hours=5, minutes=30)
    first = monitor.run(P, cfg, now=now, window=hour)
    assert [r.start for r in first] == [h0 + h * hour for h in (0, 1)]  # from the first capture
    assert any("at most 2 per pass" in n for n in monitor.last.notes)
    second = monitor.run(P, cfg, now=now, window=hour)
    assert [r.start for r in second] == [h0 + h * hour for h in (2, 3)]
    hourly = Counter(r["time_hour"].to_pydatetime().replace(tzinfo=UTC) for r in served)
    assert [r.rows for r in first + second] == [hourly[h0 + h * hour] for h in range(4)]
    assert [r.start for r in monitor.run(P, cfg, now=now, window=hour)] == [h0 + 4 * hour]
    # those hourly windows (not monitor.window) were stored and shown, but kept no episode:
    # an ad-hoc `kiln monitor --window 1h` never opens or resolves the daily alerts
    assert monitor.last.alert_changes == []
    with stores.metadata.read() as uow:
        assert {a.check: a.status for a in uow.alerts.list(P, status=["open"])} == daily_alerts


@pytest.mark.slow
@pytest.mark.postgres
def test_a_monitor_pass_on_postgresql(
    make_config, pg_url: str, warehouse: Path, tmp_path: Path
) -> None:
    """The same pass with the metadata in PostgreSQL: windows (their JSON summaries) stored
    once, alerts opened, a second monitor finds nothing left to do."""
    settings = Settings(home=tmp_path / ".kiln", db_url=pg_url)
    stores = open_stores(settings, upgrade=True)
    try:
        loaded = make_config(
            monitor={"window": "1d", "consecutive": 1, "drift": {"alert_by": "segment"}}
        )
        version = production(settings, stores, loaded)
        served = flights(warehouse, date(2013, 7, 1), date(2013, 7, 2))
        serve(settings, version, served)
        now = JULY + timedelta(days=2, hours=1)
        results = Monitor(settings, stores).run(P, loaded.config, now=now)
        assert [(r.start, r.state) for r in results] == [
            (JULY, "alert"), (JULY + timedelta(days=1), "alert"),
        ]  # fmt: skip
        assert Monitor(settings, stores).run(P, loaded.config, now=now) == []
        with stores.metadata.read() as uow:
            stored = uow.windows.list(P)
            opened = uow.alerts.list(P, status=["open"], limit=500)
        assert [WindowResult.from_dict(w.summary).findings for w in stored] == [
            r.findings for r in results
        ]
        assert "drift:temp:__all__" in {a.check for a in opened}
    finally:
        stores.close()
