"""Gate results are history, on every backend: a re-check adds a row beside the decision, the
decision stays what `kiln status` and the release controller read, a pending result is
concluded in place."""

from __future__ import annotations

import pytest

from kiln.stores import MetadataStore

P = "flights"


def test_a_recheck_adds_a_result_and_never_replaces_the_decision(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        uow.gates.record(P, 2, "data_quality", "passed", "in range", {}, champion_version=1)
        uow.gates.record(
            P, 2, "champion_challenger", "failed", "JFK regressed 30%", {"regressed": ["JFK"]},
            champion_version=1,
        )  # fmt: skip
        uow.gates.record(
            P, 2, "champion_challenger", "skipped", "no production version", {},
            trigger="recheck",
        )  # fmt: skip
    with store.unit_of_work() as uow:
        history = uow.gates.history(P, 2)
        decided = uow.gates.for_version(P, 2)
        latest = uow.gates.latest(P, 2)
    assert [(g.gate, g.status, g.trigger) for g in history] == [
        ("data_quality", "passed", "run"),
        ("champion_challenger", "failed", "run"),
        ("champion_challenger", "skipped", "recheck"),
    ]
    assert [(g.gate, g.status) for g in decided] == [
        ("data_quality", "passed"),
        ("champion_challenger", "failed"),
    ]
    assert decided[1].evidence == {"regressed": ["JFK"]} and decided[1].champion_version == 1
    assert [(g.gate, g.status, g.trigger) for g in latest] == [
        ("data_quality", "passed", "run"),
        ("champion_challenger", "skipped", "recheck"),
    ]
    assert history[2].evaluated_at >= history[1].evaluated_at


def test_a_pending_result_is_concluded_in_place_and_others_are_appended(
    store: MetadataStore,
) -> None:
    with store.unit_of_work() as uow:
        uow.gates.record(P, 3, "shadow", "pending", "until 12:00", {}, trigger="watch")
        uow.gates.record(P, 3, "shadow", "pending", "until 12:00, 4 requests", {}, trigger="watch")
        uow.gates.record(P, 3, "shadow", "passed", "120 requests", {}, trigger="watch")
        uow.gates.record(P, 3, "shadow", "failed", "a later check", {}, trigger="watch")
    with store.unit_of_work() as uow:
        history = uow.gates.history(P, 3)
    assert [(g.status, g.summary) for g in history] == [
        ("passed", "120 requests"),
        ("failed", "a later check"),
    ]


def test_a_version_gated_only_by_rechecks_shows_its_latest_recheck(store: MetadataStore) -> None:
    with store.unit_of_work() as uow:
        uow.gates.record(P, 4, "data_quality", "failed", "first", {}, trigger="recheck")
        uow.gates.record(P, 4, "data_quality", "passed", "second", {}, trigger="recheck")
    with store.unit_of_work() as uow:
        assert [g.summary for g in uow.gates.for_version(P, 4)] == ["second"]
        assert uow.gates.for_version(P, 5) == []


def test_an_unknown_trigger_is_refused(store: MetadataStore) -> None:
    with store.unit_of_work() as uow, pytest.raises(ValueError, match="invalid trigger"):
        uow.gates.record(P, 2, "data_quality", "passed", "", {}, trigger="cron")  # type: ignore[arg-type]
