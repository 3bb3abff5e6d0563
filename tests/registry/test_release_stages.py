"""Override, block and canary transitions, and a process killed in the middle of a promotion,
on every backend (``store`` runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any

import pytest
import sqlalchemy as sa

from kiln.registry import StageError, Stages
from kiln.stores import MetadataStore
from tests.registry.test_stages import ADMIN, P, audit_of, history, stages_of

TIMEOUT = 120


def test_override_promotes_a_blocked_version_with_its_reason(
    store: MetadataStore, register: Any
) -> None:
    register(2)
    stages = Stages(store)
    stages.promote(P, 1, actor="setup")
    stages.block(P, 2, actor="kiln", reason="failed gates: replay")
    assert stages_of(store) == {1: "production", 2: "blocked"}
    with pytest.raises(StageError, match="blocked"):
        stages.promote(P, 2, actor=ADMIN)
    change = stages.override(P, 2, actor=ADMIN, reason="the replay diff is the fix")
    assert (change.version, change.from_version, change.previous_stage) == (2, 1, "blocked")
    assert stages_of(store) == {1: "archived", 2: "production"}
    assert history(store)[-1] == ("promote", 2, 1, ADMIN, "the replay diff is the fix")
    action, version, actor, reason, details = audit_of(store)[-1]
    assert (action, version, actor, reason) == ("override", 2, ADMIN, "the replay diff is the fix")
    assert details["from_stage"] == "blocked"


@pytest.mark.parametrize("reason", ["", "   "])
def test_override_needs_a_reason(store: MetadataStore, register: Any, reason: str) -> None:
    register(1)
    stages = Stages(store)
    stages.block(P, 1, actor="kiln", reason="failed gates")
    with pytest.raises(StageError, match="needs a reason"):
        stages.override(P, 1, actor=ADMIN, reason=reason)
    assert stages_of(store) == {1: "blocked"}
    assert [e[0] for e in audit_of(store)] == ["block"]


def test_override_refuses_a_version_that_is_not_blocked(
    store: MetadataStore, register: Any
) -> None:
    register(1)
    with pytest.raises(StageError, match="not blocked"):
        Stages(store).override(P, 1, actor=ADMIN, reason="why not")


def test_block_refuses_the_production_version(store: MetadataStore, register: Any) -> None:
    register(1)
    stages = Stages(store)
    stages.promote(P, 1, actor="setup")
    with pytest.raises(StageError, match="production"):
        stages.block(P, 1, actor="kiln", reason="x")
    assert stages_of(store) == {1: "production"}


def test_canary_keeps_its_share_and_one_canary_per_pipeline(
    store: MetadataStore, register: Any
) -> None:
    register(3)
    stages = Stages(store)
    with pytest.raises(StageError, match="no production version"):
        stages.set_canary(P, 2, 0.1, actor="kiln")
    stages.promote(P, 1, actor="setup")
    with pytest.raises(StageError, match="between 0 and 1"):
        stages.set_canary(P, 2, 1.0, actor="kiln")
    stages.set_canary(P, 2, 0.1, actor="kiln")
    stages.set_canary(P, 3, 0.25, actor="kiln")
    with store.unit_of_work() as uow:
        shares = {v.version: (v.stage, v.traffic_share) for v in uow.versions.list(P)}
    assert shares == {1: ("production", None), 2: ("candidate", None), 3: ("canary", 0.25)}
    stages.promote(P, 3, actor="kiln")
    with store.unit_of_work() as uow:
        assert uow.versions.get(P, 3).traffic_share is None
    assert [h[0] for h in history(store)] == ["promote", "canary", "canary", "promote"]


# -- a process killed in the middle of a promotion ----------------------------------------------


def promote_and_die(url: str, version: int) -> None:
    """Promote, and SIGKILL this process right after the previous production version was
    archived and before the new one is marked production: the transaction never commits."""
    store = MetadataStore(url)

    @sa.event.listens_for(store.engine, "after_cursor_execute")
    def die(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any) -> None:
        text = str(params)
        if statement.lstrip().upper().startswith("UPDATE MODEL_VERSIONS") and "archived" in text:
            os.kill(os.getpid(), signal.SIGKILL)

    Stages(store).promote(P, version, actor="doomed")


def test_a_crash_in_the_middle_of_a_promotion_leaves_one_production(
    store: MetadataStore, register: Any
) -> None:
    register(2)
    Stages(store).promote(P, 1, actor="setup")
    ctx = multiprocessing.get_context("spawn")
    worker = ctx.Process(target=promote_and_die, args=(store.url, 2))
    worker.start()
    worker.join(TIMEOUT)
    assert worker.exitcode == -signal.SIGKILL
    assert stages_of(store) == {1: "production", 2: "candidate"}
    assert [h[0] for h in history(store)] == ["promote"]  # nothing half-recorded
    # The pipeline is not wedged: the next promotion goes through.
    Stages(store).promote(P, 2, actor="retry")
    assert stages_of(store) == {1: "archived", 2: "production"}


def test_a_conditional_rollback_happens_once(store: MetadataStore, register: Any) -> None:
    """Two watchers that both judged v3 bad: the second one's rollback is a no-op, it does not
    roll back v2 as well."""
    register(3)
    stages = Stages(store)
    for v in (1, 2, 3):
        stages.promote(P, v, actor="setup")
    first = stages.rollback(P, actor="kiln", only_from=3)
    second = stages.rollback(P, actor="kiln", only_from=3)
    assert (first.changed, first.version) == (True, 2)
    assert not second.changed
    assert stages_of(store) == {1: "archived", 2: "production", 3: "archived"}
    assert [h[0] for h in history(store)].count("rollback") == 1
