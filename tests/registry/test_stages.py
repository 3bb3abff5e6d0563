"""Stage changes on every backend: each one a transaction with its deployment and audit rows."""

from __future__ import annotations

import itertools
import multiprocessing
import queue
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from kiln.errors import KilnError, NotFoundError, StoreError
from kiln.registry import StageError, Stages, Transition, previous_production
from kiln.stores import MetadataStore
from kiln.stores.metadata import DeploymentRecord
from kiln.stores.metadata.base import one_production_violated

P = "flights-delay"
ADMIN = "alice"


def stages_of(store: MetadataStore, pipeline: str = P) -> dict[int, str]:
    with store.unit_of_work() as uow:
        return {v.version: v.stage for v in uow.versions.list(pipeline)}


def history(store: MetadataStore, pipeline: str = P) -> list[tuple[Any, ...]]:
    """Deployments, oldest first, as (action, version, from_version, actor, reason)."""
    with store.unit_of_work() as uow:
        rows = uow.deployments.list(pipeline, limit=None)
    return [(d.action, d.version, d.from_version, d.actor, d.reason) for d in reversed(rows)]


def audit_of(store: MetadataStore, pipeline: str = P) -> list[tuple[Any, ...]]:
    """Audit events, oldest first, as (action, version, actor, reason, details)."""
    with store.unit_of_work() as uow:
        rows = uow.audit.list(pipeline)
    return [(e.action, e.version, e.actor, e.reason, e.details) for e in reversed(rows)]


def block(store: MetadataStore, version: int) -> None:
    with store.unit_of_work() as uow:
        uow.versions.set_stage(P, version, "blocked")


class TestPromote:
    def test_first_promotion_records_deployment_and_audit(
        self, store: MetadataStore, register: Any
    ) -> None:
        register(2)
        stages = Stages(store)
        change = stages.promote(P, 1, actor=ADMIN, reason="best mae")
        assert change == Transition(P, "promote", 1, "production", "candidate", None, True)
        assert str(change) == "flights-delay: v1 -> production"
        production = stages.production(P)
        assert production is not None and production.version == 1
        assert stages_of(store) == {1: "production", 2: "candidate"}
        assert history(store) == [("promote", 1, None, ADMIN, "best mae")]
        [(action, version, actor, reason, details)] = audit_of(store)
        assert (action, version, actor, reason) == ("promote", 1, ADMIN, "best mae")
        assert details["from_version"] is None and details["to_version"] == 1
        assert details["from_stage"] == "candidate" and details["to_stage"] == "production"

    def test_the_previous_production_is_archived(self, store: MetadataStore, register: Any) -> None:
        register(3)
        stages = Stages(store)
        stages.promote(P, 1, actor=ADMIN)
        change = stages.promote(P, 2, actor="bob", reason="retrained")
        assert str(change) == "flights-delay: v2 -> production (v1 archived)"
        assert change.from_version == 1
        assert stages_of(store) == {1: "archived", 2: "production", 3: "candidate"}
        assert history(store)[-1] == ("promote", 2, 1, "bob", "retrained")
        action, version, actor, reason, details = audit_of(store)[-1]
        assert (action, version, actor, reason) == ("promote", 2, "bob", "retrained")
        assert (details["from_version"], details["to_version"]) == (1, 2)

    def test_promoting_the_production_version_is_a_no_op(
        self, store: MetadataStore, register: Any
    ) -> None:
        register(1)
        stages = Stages(store)
        stages.promote(P, 1, actor=ADMIN)
        change = stages.promote(P, 1, actor=ADMIN)
        assert not change.changed
        assert str(change) == "flights-delay: v1 is production; nothing changed"
        assert len(history(store)) == 1 and len(audit_of(store)) == 1

    def test_an_archived_version_can_be_promoted_again(
        self, store: MetadataStore, register: Any
    ) -> None:
        register(3)
        stages = Stages(store)
        for version in (1, 2, 3):
            stages.promote(P, version, actor=ADMIN)
        change = stages.promote(P, 1, actor=ADMIN, reason="back to the known good one")
        assert (change.previous_stage, change.from_version) == ("archived", 3)
        assert stages_of(store) == {1: "production", 2: "archived", 3: "archived"}

    def test_a_shadow_version_leaves_shadow_when_promoted(
        self, store: MetadataStore, register: Any
    ) -> None:
        register(2)
        stages = Stages(store)
        stages.promote(P, 1, actor=ADMIN)
        stages.set_shadow(P, 2, actor=ADMIN)
        change = stages.promote(P, 2, actor=ADMIN)
        assert change.previous_stage == "shadow"
        assert stages.shadows(P) == []

    def test_a_blocked_version_is_refused(self, store: MetadataStore, register: Any) -> None:
        register(2)
        stages = Stages(store)
        stages.promote(P, 1, actor=ADMIN)
        block(store, 2)
        with pytest.raises(StageError) as info:
            stages.promote(P, 2, actor=ADMIN)
        assert "version 2 of pipeline 'flights-delay' is blocked" in str(info.value)
        assert "kiln override flights-delay 2 --reason" in str(info.value)
        assert isinstance(info.value, KilnError)
        assert stages_of(store) == {1: "production", 2: "blocked"}
        assert len(history(store)) == 1 and len(audit_of(store)) == 1

    @pytest.mark.parametrize(("pipeline", "version"), [(P, 9), ("no-such-pipeline", 1)])
    def test_an_unknown_version_is_not_found(
        self, store: MetadataStore, register: Any, pipeline: str, version: int
    ) -> None:
        register(1)
        with pytest.raises(NotFoundError) as info:
            Stages(store).promote(pipeline, version, actor=ADMIN)
        assert f"no version {version} of pipeline {pipeline!r}" in str(info.value)
        assert "kiln models list" in str(info.value)
        assert history(store, pipeline) == [] and audit_of(store, pipeline) == []


class TestRollback:
    def test_rollback_puts_back_the_previous_production(
        self, store: MetadataStore, register: Any
    ) -> None:
        register(3)
        stages = Stages(store)
        for version in (1, 2, 3):
            stages.promote(P, version, actor=ADMIN)
        change = stages.rollback(P, actor="bob", reason="v3 answers late")
        assert change == Transition(P, "rollback", 2, "production", "archived", 3, True)
        assert str(change) == "flights-delay: v2 -> production (v3 archived)"
        assert stages_of(store) == {1: "archived", 2: "production", 3: "archived"}
        assert history(store)[-1] == ("rollback", 2, 3, "bob", "v3 answers late")
        action, version, actor, reason, details = audit_of(store)[-1]
        assert (action, version, actor, reason) == ("rollback", 2, "bob", "v3 answers late")
        assert (details["from_version"], details["to_version"]) == (3, 2)

    def test_rolling_back_again_goes_further_back_then_stops(
        self, store: MetadataStore, register: Any
    ) -> None:
        register(3)
        stages = Stages(store)
        for version in (1, 2, 3):
            stages.promote(P, version, actor=ADMIN)
        assert stages.rollback(P, actor=ADMIN).version == 2
        assert stages.rollback(P, actor=ADMIN).version == 1
        with pytest.raises(NotFoundError, match="no earlier production version of 'flights-delay'"):
            stages.rollback(P, actor=ADMIN)
        assert stages_of(store) == {1: "production", 2: "archived", 3: "archived"}

    def test_rollback_after_a_promotion_that_followed_a_rollback(
        self, store: MetadataStore, register: Any
    ) -> None:
        register(3)
        stages = Stages(store)
        stages.promote(P, 1, actor=ADMIN)
        stages.promote(P, 2, actor=ADMIN)
        stages.rollback(P, actor=ADMIN)
        stages.promote(P, 3, actor=ADMIN)
        assert stages.rollback(P, actor=ADMIN).version == 1
        assert stages_of(store) == {1: "production", 2: "archived", 3: "archived"}

    def test_rollback_without_history(self, store: MetadataStore, register: Any) -> None:
        stages = Stages(store)
        with pytest.raises(NotFoundError, match="no earlier production version of 'flights-delay'"):
            stages.rollback(P, actor=ADMIN)  # no such pipeline
        register(2)
        with pytest.raises(NotFoundError, match="it has no production version"):
            stages.rollback(P, actor=ADMIN)
        stages.promote(P, 1, actor=ADMIN)
        with pytest.raises(NotFoundError) as info:
            stages.rollback(P, actor=ADMIN)
        assert "no earlier production version of 'flights-delay' to roll back to" in str(info.value)
        assert "kiln promote flights-delay VERSION" in str(info.value)
        assert stages_of(store) == {1: "production", 2: "candidate"}
        assert len(history(store)) == 1

    def test_rollback_to_a_blocked_version_is_refused(
        self, store: MetadataStore, register: Any
    ) -> None:
        register(2)
        stages = Stages(store)
        stages.promote(P, 1, actor=ADMIN)
        stages.promote(P, 2, actor=ADMIN)
        block(store, 1)
        with pytest.raises(StageError, match="kiln override flights-delay 1 --reason"):
            stages.rollback(P, actor=ADMIN)
        assert stages_of(store) == {1: "blocked", 2: "production"}


class TestShadow:
    def test_shadow_and_unshadow(self, store: MetadataStore, register: Any) -> None:
        register(3)
        stages = Stages(store)
        stages.promote(P, 1, actor=ADMIN)
        change = stages.set_shadow(P, 2, actor=ADMIN, reason="try it on live traffic")
        assert str(change) == "flights-delay: v2 -> shadow (was candidate)"
        stages.set_shadow(P, 3, actor=ADMIN)
        assert [v.version for v in stages.shadows(P)] == [2, 3]
        assert not stages.set_shadow(P, 2, actor=ADMIN).changed
        change = stages.unshadow(P, 2, actor="bob")
        assert str(change) == "flights-delay: v2 -> candidate (was shadow)"
        assert not stages.unshadow(P, 2, actor="bob").changed
        assert stages_of(store) == {1: "production", 2: "candidate", 3: "shadow"}
        assert history(store)[1:] == [
            ("shadow", 2, None, ADMIN, "try it on live traffic"),
            ("shadow", 3, None, ADMIN, None),
            ("unshadow", 2, None, "bob", None),
        ]
        assert [(a, v, who) for a, v, who, _, _ in audit_of(store)] == [
            ("promote", 1, ADMIN),
            ("shadow", 2, ADMIN),
            ("shadow", 3, ADMIN),
            ("unshadow", 2, "bob"),
        ]
        production = stages.production(P)
        assert production is not None and production.version == 1

    def test_production_and_blocked_versions_cannot_shadow(
        self, store: MetadataStore, register: Any
    ) -> None:
        register(2)
        stages = Stages(store)
        stages.promote(P, 1, actor=ADMIN)
        block(store, 2)
        with pytest.raises(StageError, match="is the production version"):
            stages.set_shadow(P, 1, actor=ADMIN)
        with pytest.raises(StageError, match="kiln override flights-delay 2"):
            stages.set_shadow(P, 2, actor=ADMIN)
        assert stages_of(store) == {1: "production", 2: "blocked"}


class TestOneProductionInTheDatabase:
    def test_the_repository_cannot_set_two_productions(
        self, store: MetadataStore, register: Any
    ) -> None:
        register(2)
        with (
            pytest.raises(StoreError, match="a pipeline has at most one"),
            store.unit_of_work() as uow,
        ):
            uow.versions.set_stage(P, 1, "production")
            uow.versions.set_stage(P, 2, "production")
        assert stages_of(store) == {1: "candidate", 2: "candidate"}

    def test_raw_sql_cannot_set_two_productions(self, store: MetadataStore, register: Any) -> None:
        register(3)
        register(1, pipeline="airports")
        update = "UPDATE model_versions SET stage = :stage WHERE pipeline = :p AND version = :v"
        with store.engine.begin() as conn:
            for p, v, stage in [(P, 1, "production"), ("airports", 1, "production")]:
                conn.execute(sa.text(update), {"p": p, "v": v, "stage": stage})
            for v in (2, 3):  # any number of the other stages
                conn.execute(sa.text(update), {"p": P, "v": v, "stage": "shadow"})
        with pytest.raises(sa.exc.IntegrityError) as info, store.engine.begin() as conn:
            conn.execute(sa.text(update), {"p": P, "v": 2, "stage": "production"})
        assert one_production_violated(info.value)
        with store.unit_of_work() as uow:
            run_id = uow.runs.create(P, "manual", "", "c" * 64, "kiln.yaml", "host", 1).id
        insert = (
            "INSERT INTO model_versions (pipeline, version, run_id, stage, manifest_digest,"
            " created_at, stage_changed_at, metrics, lineage) SELECT pipeline, 4, :run,"
            " 'production', manifest_digest, created_at, stage_changed_at, metrics, lineage"
            " FROM model_versions WHERE pipeline = :p AND version = 1"
        )
        with pytest.raises(sa.exc.IntegrityError) as info, store.engine.begin() as conn:
            conn.execute(sa.text(insert), {"p": P, "run": run_id})
        assert one_production_violated(info.value)
        with (
            pytest.raises(StoreError, match="a pipeline has at most one"),
            store.unit_of_work() as uow,
        ):
            uow.versions.register(P, run_id, "d" * 64, {}, {}, stage="production")
        assert stages_of(store) == {1: "production", 2: "shadow", 3: "shadow"}


def deployment(
    id_: int, action: Any, version: int, from_version: int | None = None
) -> DeploymentRecord:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return DeploymentRecord(id_, P, version, action, from_version, ADMIN, None, at)


def newest_first(*events: tuple[Any, ...]) -> list[DeploymentRecord]:
    return [deployment(i, *e) for i, e in reversed(list(enumerate(events, 1)))]


@pytest.mark.parametrize(
    ("events", "current", "expected"),
    [
        ([], 1, None),
        ([("promote", 1)], 1, None),
        ([("promote", 1), ("promote", 2, 1)], 2, 1),
        ([("promote", 1), ("promote", 2, 1), ("rollback", 1, 2)], 1, None),
        ([("promote", 1), ("promote", 2, 1), ("promote", 3, 2), ("rollback", 2, 3)], 2, 1),
        ([("promote", 1), ("promote", 2, 1), ("shadow", 3), ("unshadow", 3)], 2, 1),
        ([("promote", 1), ("promote", 2, 1), ("promote", 1, 2)], 1, 2),
        # production set outside the history: only what a promotion names is known
        ([("promote", 5, 4)], 5, 4),
        ([("promote", 1), ("promote", 2, 1)], 7, None),
    ],
)
def test_previous_production_replays_the_history(
    events: list[tuple[Any, ...]], current: int, expected: int | None
) -> None:
    assert previous_production(newest_first(*events), current) == expected


# -- two OS processes promoting at once ---------------------------------------------------------

ROUNDS = 4
TIMEOUT = 120


def promote_worker(url: str, name: str, versions: list[int], barrier: Any, results: Any) -> None:
    store = MetadataStore(url)
    try:
        stages = Stages(store)
        for round_, version in enumerate(versions):
            barrier.wait(TIMEOUT)
            try:
                change = stages.promote(P, version, actor=name)
                results.put((round_, name, version, "promoted", change.from_version))
            except StoreError as e:
                results.put((round_, name, version, "refused", str(e)))
    finally:
        store.dispose()


def test_two_processes_promoting_leave_one_production(store: MetadataStore, register: Any) -> None:
    register(2 * ROUNDS + 1)
    Stages(store).promote(P, 1, actor="setup")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    plans = {"a": [2 + 2 * r for r in range(ROUNDS)], "b": [3 + 2 * r for r in range(ROUNDS)]}
    workers = [
        ctx.Process(target=promote_worker, args=(store.url, name, versions, barrier, results))
        for name, versions in plans.items()
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=TIMEOUT) for _ in range(2 * ROUNDS)]
    for worker in workers:
        worker.join(TIMEOUT)
        if worker.is_alive():
            worker.kill()
    assert [w.exitcode for w in workers] == [0, 0]

    promoted = [o for o in outcomes if o[3] == "promoted"]
    for round_ in range(ROUNDS):
        assert any(o[0] == round_ for o in promoted), outcomes
    assert all("a pipeline has at most one" in o[4] for o in outcomes if o[3] == "refused")

    stages = stages_of(store)
    assert list(stages.values()).count("production") == 1
    deployed = history(store)
    assert len(deployed) == 1 + len(promoted)  # every promotion recorded, none twice
    assert len(audit_of(store)) == 1 + len(promoted)
    # The history is one chain: each promotion replaced the one committed before it.
    for before, after in itertools.pairwise(deployed):
        assert after[2] == before[1]
    assert stages[deployed[-1][1]] == "production"
    assert sorted(o[4] for o in promoted) == sorted(d[2] for d in deployed[1:])


def promote_once(url: str, version: int, ready: Any, go: Any, results: Any) -> None:
    store = MetadataStore(url)
    try:
        ready.set()
        go.wait(TIMEOUT)
        change = Stages(store).promote(P, version, actor="b")
        results.put(("promoted", change.from_version))
    except StoreError as e:
        results.put(("refused", str(e)))
    finally:
        store.dispose()


def test_a_promotion_waits_for_a_stage_change_in_progress(
    store: MetadataStore, register: Any
) -> None:
    """The promotion reads the stages only once the change in progress has committed, so it
    archives the version that change put in production instead of colliding with it."""
    register(3)
    Stages(store).promote(P, 1, actor="setup")
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
    worker = ctx.Process(target=promote_once, args=(store.url, 3, ready, go, results))
    worker.start()
    try:
        assert ready.wait(TIMEOUT)
        with store.unit_of_work() as uow:
            uow.pipelines.lock(P)
            uow.versions.set_stage(P, 1, "archived")
            uow.versions.set_stage(P, 2, "production")
            go.set()
            with pytest.raises(queue.Empty):
                results.get(timeout=1.5)  # it waits for this transaction to end
        assert results.get(timeout=TIMEOUT) == ("promoted", 2)
        worker.join(TIMEOUT)
        assert worker.exitcode == 0
    finally:
        if worker.is_alive():
            worker.kill()
    assert stages_of(store) == {1: "archived", 2: "archived", 3: "production"}
