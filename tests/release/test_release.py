"""The release controller end to end on real versions of the real flights: gate, promote or
block, override, shadow period, canary, automatic rollback — every decision from real gate
results over real captures."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from kiln.config import load_config
from kiln.registry import Stages
from kiln.registry.version import Version
from kiln.release.controller import Release
from kiln.release.decision import SYSTEM_ACTOR
from kiln.release.events import EventKind
from kiln.runs.runner import Runner
from kiln.settings import Settings
from kiln.stores import open_stores
from kiln.stores.capture import CaptureRecord, CaptureWriter
from tests.conftest import BASE, merge

P = BASE["name"]
AUTO: dict[str, Any] = {"deploy": {"auto_promote": True}}


@pytest.fixture
def env(tmp_path: Path, warehouse: Path) -> Iterator[SimpleNamespace]:
    settings = Settings(home=tmp_path / ".kiln")
    stores = open_stores(settings, upgrade=True)
    release = Release(settings, stores)

    def train(name: str, **changes: Any) -> int:
        data = merge(merge(merge(BASE, {"data": {"source": str(warehouse)}}), AUTO), changes)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return Runner(settings, stores).run(load_config(path)).version

    def version(number: int) -> Version:
        with stores.metadata.unit_of_work() as uow:
            return Version(stores, uow.versions.get(P, number))

    def stages() -> dict[int, str]:
        with stores.metadata.unit_of_work() as uow:
            return {v.version: v.stage for v in uow.versions.list(P)}

    def gates(number: int) -> dict[str, str]:
        with stores.metadata.unit_of_work() as uow:
            return {g.gate: g.status for g in uow.gates.for_version(P, number)}

    yield SimpleNamespace(
        settings=settings, stores=stores, release=release, train=train, version=version,
        stages=stages, gates=gates,
    )  # fmt: skip
    stores.close()


def serve(
    env: SimpleNamespace,
    number: int,
    stage: str,
    n: int,
    *,
    failing: bool = False,
    prefix: str = "req",
    latency_ms: float = 2.0,
) -> None:
    """Capture ``n`` requests as the server would: real holdout rows, the version's real
    answers (or, ``failing``, refusals with no prediction)."""
    version = env.version(number)
    frame = version.holdout[version.features].head(n)
    rows: list[dict[str, Any]] = frame.astype(object).where(frame.notna(), None).to_dict("records")
    prediction = version.predictor.predict(rows)
    now = datetime.now(UTC)
    with CaptureWriter(env.settings.artifact_root, writer_id=f"t{number}{stage}") as writer:
        for i, row in enumerate(rows):
            writer.offer(
                CaptureRecord(
                    request_id=f"{prefix}-{i}",
                    ts=now,
                    pipeline=P,
                    version=number,
                    stage=stage,
                    segment=row.get("origin"),
                    model="-" if failing else prediction.model[i],
                    fallback=False if failing else bool(prediction.fallback[i]),
                    features=row,
                    prediction=None if failing else float(prediction.values[i]),
                    error="422 invalid_request: features.dep_delay missing" if failing else None,
                    latency_ms=latency_ms,
                )
            )


def audit(env: SimpleNamespace) -> list[tuple[str, int | None, str, str | None]]:
    with env.stores.metadata.unit_of_work() as uow:
        events = uow.audit.list(P)
    return [(e.action, e.version, e.actor, e.reason) for e in reversed(events)]


def test_block_override_then_automatic_rollback(env: SimpleNamespace) -> None:
    v1 = env.train("v1")
    first = env.release.after_run(P, v1)
    assert first.outcome == "promoted", first.message
    assert env.gates(v1) == {
        "data_quality": "passed",
        "feature_availability": "skipped",
        "champion_challenger": "skipped",
        "replay": "skipped",
    }
    serve(env, v1, "production", 300)

    # A candidate that needs a feature the callers never send is blocked, with evidence.
    v2 = env.train("v2", features=[*BASE["features"], "dep_delay"])
    blocked = env.release.after_run(P, v2)
    assert blocked.outcome == "blocked"
    assert env.stages() == {v1: "production", v2: "blocked"}
    assert env.gates(v2)["replay"] == "failed"
    assert env.gates(v2)["feature_availability"] == "failed"
    assert "dep_delay" in blocked.message
    action, version, actor, reason = audit(env)[-1]
    assert (action, version, actor) == ("block", v2, SYSTEM_ACTOR)
    assert reason is not None and "replay" in reason

    # An admin overrides it; the callers' requests then fail on it.
    Stages(env.stores.metadata).override(P, v2, actor="alice", reason="callers send it now")
    assert env.stages() == {v1: "archived", v2: "production"}
    assert audit(env)[-1] == ("override", v2, "alice", "callers send it now")
    serve(env, v2, "production", 10, failing=True, prefix="few")
    assert env.release.tick(P) == []  # 10 requests: below rollback.min_requests (20)
    serve(env, v2, "production", 30, failing=True, prefix="many")
    later = Release(env.settings, env.stores, clock=lambda: datetime.now(UTC) + timedelta(hours=1))
    assert later.tick(P) == []  # past the 30 min watch window: not rolled back any more

    events = env.release.tick(P)  # within the window: rolled back
    assert len(events) == 1 and f"rolled back v{v2} -> v{v1}" in events[0].message, events
    rolled_back = events[0]
    assert rolled_back.message.startswith(f"{P}: rolled back v{v2} -> v{v1}: error rate 100.0%")
    assert (rolled_back.kind, rolled_back.version) == (EventKind.ROLLED_BACK, v2)
    assert rolled_back.details["to_version"] == v1 and rolled_back.details["gate"] == "live"
    assert rolled_back.details["evidence"]["error_rate"] == 1.0
    assert env.stages() == {v1: "production", v2: "archived"}
    action, version, actor, reason = audit(env)[-1]
    assert (action, version, actor) == ("rollback", v1, SYSTEM_ACTOR)
    assert reason is not None and "error rate 100.0%" in reason and "watch window" in reason
    assert env.gates(v2)["live"] == "failed"
    assert env.release.tick(P) == []  # v1 is healthy: nothing more to do
    # If the trouble was the traffic, v1 (put back by a rollback) is not rolled back in turn.
    serve(env, v1, "production", 30, failing=True, prefix="still")
    assert env.release.tick(P) == []
    assert env.stages() == {v1: "production", v2: "archived"}


def test_replay_pass_shadow_period_and_canaries(env: SimpleNamespace) -> None:
    v1 = env.train("v1")
    env.release.after_run(P, v1)
    serve(env, v1, "production", 200)

    # An honest retrain passes replay and waits in shadow for 100 shadow requests.
    v2 = env.train("v2", model={"params": {"n_estimators": 25}},
                   deploy={"shadow": {"min_requests": 100}})  # fmt: skip
    decision = env.release.after_run(P, v2)
    assert decision.outcome == "shadow", decision.message
    assert env.gates(v2)["replay"] == "passed"
    with env.stores.metadata.unit_of_work() as uow:
        replay = next(g for g in uow.gates.for_version(P, v2) if g.gate == "replay")
    assert replay.evidence
    assert env.stages() == {v1: "production", v2: "shadow"}
    assert env.gates(v2)["shadow"] == "pending"
    assert env.release.tick(P) == []  # no shadow traffic yet: still pending
    serve(env, v2, "shadow", 150)  # the server's shadow copies of the same requests
    events = env.release.tick(P)
    assert len(events) == 1 and "promoted" in events[0].message, events
    assert (events[0].kind, events[0].version) == (EventKind.PROMOTED, v2)
    assert events[0].details["gate"] == "shadow" and events[0].details["outcome"] == "promoted"
    assert env.gates(v2)["shadow"] == "passed"
    assert env.stages() == {v1: "archived", v2: "production"}

    # A canary that fails its requests is blocked at once.
    v3 = env.train("v3", deploy={"canary_share": 0.25})
    assert env.release.after_run(P, v3).outcome == "canary"
    with env.stores.metadata.unit_of_work() as uow:
        assert uow.versions.get(P, v3).traffic_share == 0.25
    serve(env, v3, "canary", 30, failing=True, prefix="c3")
    events = env.release.tick(P)
    assert len(events) == 1 and "blocked" in events[0].message, events
    assert "error rate 100.0%" in events[0].message
    assert (events[0].kind, events[0].version) == (EventKind.BLOCKED, v3)
    assert events[0].details["gate"] == "canary" and events[0].details["from_stage"] == "canary"
    assert env.stages()[v3] == "blocked"

    # A healthy canary is promoted once its watch window is over.
    v4 = env.train("v4", deploy={"canary_share": 0.25, "rollback": {"watch": "1h"}})
    assert env.release.after_run(P, v4).outcome == "canary"
    serve(env, v4, "canary", 40, prefix="c4")
    assert env.release.tick(P) == []  # healthy, but the watch window is not over
    later = Release(env.settings, env.stores, clock=lambda: datetime.now(UTC) + timedelta(hours=2))
    events = later.tick(P)
    assert len(events) == 1 and f"v{v4} promoted" in events[0].message, events
    assert (events[0].kind, events[0].version) == (EventKind.CANARY_PROMOTED, v4)
    assert events[0].at > datetime.now(UTC) + timedelta(hours=1)  # the controller's clock
    assert env.gates(v4)["canary"] == "passed"
    assert env.stages() == {v1: "archived", v2: "archived", v3: "blocked", v4: "production"}


def test_a_recheck_of_an_overridden_version_keeps_the_evidence_it_was_blocked_on(
    env: SimpleNamespace, cli: Any
) -> None:
    """Re-checking a blocked-then-overridden production version compares it with the champion
    of its release decision (v1, archived now), adds its results beside the decision's, and
    `kiln status` and `kiln gates show` still say why it was blocked."""
    v1 = env.train("v1")
    assert env.release.after_run(P, v1).outcome == "promoted"
    weak = {"model": {"params": {"n_estimators": 1, "learning_rate": 0.01}},
            "deploy": {"gates": {"champion_challenger": {"tolerance": 0.0}}}}  # fmt: skip
    v2 = env.train("v2", **weak)
    assert env.release.after_run(P, v2).outcome == "blocked"
    assert env.gates(v2)["champion_challenger"] == "failed"
    Stages(env.stores.metadata).override(P, v2, actor="alice", reason="we accept it")
    assert env.stages() == {v1: "archived", v2: "production"}

    found = env.release.evaluate(P, v2)
    assert found.champion == v1 and found.as_decided
    rechecked = next(r for r in found.results if r.gate == "champion_challenger")
    assert rechecked.status == "failed", rechecked.summary
    assert rechecked.evidence["champion_version"] == v1
    assert env.gates(v2)["champion_challenger"] == "failed"  # the decision, unchanged
    with env.stores.metadata.unit_of_work() as uow:
        history = uow.gates.history(P, v2)
    cc = [g for g in history if g.gate == "champion_challenger"]
    assert [(g.trigger, g.status, g.champion_version) for g in cc] == [
        ("run", "failed", v1),
        ("recheck", "failed", v1),
    ]

    home = {"KILN_HOME": str(env.settings.home)}
    status = cli("status", cwd=env.settings.home.parent, env=home)
    line = next(row for row in status.stdout.splitlines() if P in row)
    assert "failed: champion_challenger" in line, status.stdout
    shown = cli("gates", "show", P, str(v2), cwd=env.settings.home.parent, env=home)
    assert shown.returncode == 0, shown.stderr
    assert "other results (re-checks and earlier ones)" in shown.stdout
    assert "recheck" in shown.stdout and f"v{v1}" in shown.stdout
    assert "first release" not in shown.stdout
