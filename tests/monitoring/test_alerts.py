"""Alert episodes from window findings, on every backend: open after N windows in a row, notify
once, escalate once, resolve on recovery; unjudged windows change nothing; a window seen
twice (or by two monitors at once) counts once."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kiln.monitoring.alerts import AlertChange, update_alerts
from kiln.monitoring.findings import Finding, Level
from kiln.stores import MetadataStore

P = "flights-delay"
CHECK = "drift:temp:EWR"
DAY = timedelta(days=1)
START = datetime(2013, 10, 1, tzinfo=UTC)
CHANNELS = ["log", "http://127.0.0.1:9/hook"]
RACERS = 3
TIMEOUT = 60


def window(n: int) -> datetime:
    return START + n * DAY


def finding(level: Level, value: float | None = None, check: str = CHECK) -> Finding:
    threshold = 0.25 if level == "alert" else 0.1
    return Finding(
        check, "drift", level, value, threshold, f"temp psi {value} in EWR",
        segment="EWR", feature="temp", version=1, details={"statistic": "psi"},
    )  # fmt: skip


def judge(
    store: MetadataStore, n: int, *findings: Finding, consecutive: int = 3
) -> list[AlertChange]:
    with store.unit_of_work() as uow:
        return update_alerts(
            uow, P, window(n), window(n + 1), findings, consecutive, CHANNELS,
            window(n + 1) + timedelta(minutes=5),
        )  # fmt: skip


def kinds(changes: list[AlertChange]) -> list[tuple[str, int]]:
    return [(c.kind, c.queued) for c in changes]


def deliveries(store: MetadataStore) -> list[tuple[str, str]]:
    with store.read() as uow:
        (episode,) = uow.alerts.list(P)
        return [(d.event, d.channel) for d in uow.alerts.deliveries(episode.id)]


def test_an_episode_opens_after_n_windows_notifies_once_escalates_once_and_resolves(
    store: MetadataStore,
) -> None:
    assert kinds(judge(store, 0, finding("warn", 0.12))) == [("pending", 0)]
    assert judge(store, 0, finding("warn", 0.12)) == []  # the same window again: no change
    assert kinds(judge(store, 1, finding("warn", 0.13))) == [("pending", 0)]
    (opened,) = judge(store, 2, finding("warn", 0.15))
    assert (opened.kind, opened.queued, opened.alert.status, opened.alert.streak) == (
        "opened", 2, "open", 3,
    )  # fmt: skip
    assert opened.alert.first_window == window(0) and opened.alert.opened_at is not None
    assert kinds(judge(store, 3, finding("warn", 0.14))) == [("still_open", 0)]
    (escalated,) = judge(store, 4, finding("alert", 0.31))
    assert (escalated.kind, escalated.queued, escalated.alert.level) == ("escalated", 2, "alert")
    assert kinds(judge(store, 5, finding("warn", 0.2))) == [("still_open", 0)]
    assert kinds(judge(store, 6, finding("alert", 0.4))) == [("still_open", 0)]  # once
    (resolved,) = judge(store, 7, finding("ok", 0.02))
    assert (resolved.kind, resolved.queued, resolved.alert.status) == ("resolved", 2, "resolved")
    assert resolved.alert.streak == 7 and resolved.alert.last_window == window(7)
    assert judge(store, 7, finding("ok", 0.02)) == []
    assert deliveries(store) == [
        ("opened", "log"), ("opened", CHANNELS[1]),
        ("opened", "log#alert"), ("opened", CHANNELS[1] + "#alert"),
        ("resolved", "log"), ("resolved", CHANNELS[1]),
    ]  # fmt: skip
    details = resolved.alert.details
    assert details["opened_level"] == "warn" and details["peak_level"] == "alert"
    assert details["peak_value"] == 0.4 and details["escalated_window"] == window(4).isoformat()
    assert details["segment"] == "EWR" and details["statistic"] == "psi"


def test_a_pending_episode_that_recovers_is_dropped_without_a_notification(
    store: MetadataStore,
) -> None:
    judge(store, 0, finding("alert", 0.4))
    (dropped,) = judge(store, 1, finding("ok", 0.01))
    assert (dropped.kind, dropped.alert.status, dropped.alert.opened_at) == (
        "dropped", "resolved", None,
    )  # fmt: skip
    assert deliveries(store) == []
    assert judge(store, 2, finding("ok", 0.01)) == []  # nothing live: nothing to resolve


def test_unjudged_windows_and_windows_without_the_check_change_nothing(
    store: MetadataStore,
) -> None:
    judge(store, 0, finding("warn", 0.12))
    assert judge(store, 1, finding("unjudged")) == []
    assert judge(store, 2) == []  # no traffic: no findings
    assert kinds(judge(store, 3, finding("warn", 0.12))) == [("pending", 0)]
    with store.read() as uow:
        live = uow.alerts.live(P, CHECK)
    assert live is not None and live.streak == 2


def test_an_older_window_judged_again_changes_nothing(store: MetadataStore) -> None:
    judge(store, 5, finding("warn", 0.12), consecutive=2)
    assert judge(store, 3, finding("warn", 0.12), consecutive=2) == []
    assert judge(store, 3, finding("ok", 0.01), consecutive=2) == []
    judge(store, 6, finding("ok", 0.01), consecutive=2)  # dropped at window 6
    assert judge(store, 4, finding("warn", 0.3), consecutive=2) == []  # before the last one
    with store.read() as uow:
        assert len(uow.alerts.list(P)) == 1


def test_one_window_opens_at_once_with_consecutive_1_and_the_worst_finding_of_a_check_counts(
    store: MetadataStore,
) -> None:
    changes = judge(
        store, 0, finding("warn", 0.12), finding("alert", 0.3), finding("ok", 0.0, "errors"),
        finding("warn", 0.5, "drift:dest:JFK"), consecutive=1,
    )  # fmt: skip
    assert sorted((c.alert.check, c.kind, c.alert.level) for c in changes) == [
        ("drift:dest:JFK", "opened", "warn"), (CHECK, "opened", "alert"),
    ]  # fmt: skip
    # opened at alert: staying at alert never escalates
    assert [c.kind for c in judge(store, 1, finding("alert", 0.5), consecutive=1)] == ["still_open"]
    with pytest.raises(ValueError, match="consecutive"):
        judge(store, 2, finding("warn", 0.1), consecutive=0)


def race_worker(url: str, barrier: Any, out: Any) -> None:
    store = MetadataStore(url)
    try:
        barrier.wait(TIMEOUT)
        seen = [kind for n in range(3) for kind, _ in kinds(judge(store, n, finding("warn", 0.2)))]
        out.put(seen)
    finally:
        store.dispose()


@pytest.mark.slow  # spawns three interpreters
def test_monitors_judging_the_same_windows_at_once_make_one_episode_notified_once(
    store: MetadataStore,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(RACERS), ctx.Queue()
    workers = [ctx.Process(target=race_worker, args=(store.url, barrier, out)) for _ in "abc"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
    assert [w.exitcode for w in workers] == [0] * RACERS
    seen = [kind for _ in range(RACERS) for kind in out.get(timeout=TIMEOUT)]
    assert seen.count("opened") == 1, seen
    with store.read() as uow:
        (episode,) = uow.alerts.list(P)
    assert (episode.status, episode.streak) == ("open", 3)
    assert deliveries(store) == [("opened", "log"), ("opened", CHANNELS[1])]
