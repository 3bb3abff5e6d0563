"""`kiln gc` on a registry with history: real runs of the flights example, real captures, labels
and stored objects; the dry run lists exactly what retention lets go, --apply deletes exactly
that, and every version still loads; a concurrent `kiln run` is never hurt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
import yaml

from kiln.config import load_config
from kiln.errors import ConfigError, TrainingError
from kiln.registry.gc import apply_gc, plan_gc
from kiln.registry.liveness import STALE_AFTER
from kiln.registry.stages import Stages
from kiln.registry.version import Version
from kiln.runs.reporting import host_and_pid
from kiln.runs.runner import Runner
from kiln.settings import Settings
from kiln.stores import CaptureRecord, CaptureWriter, open_stores
from kiln.stores.labels import LabelStore
from kiln.stores.metadata import tables as t
from tests.conftest import BASE, ROOT, kiln_cli, merge

PIPELINE = "flights-test"
NOW = datetime.now(UTC)
RETENTION = {"data": {"snapshot_retention": "14d"}, "capture": {"retention": "7d"}}
# the replay gate reads the newest 8 production captures: today's 5 and 3 of day -5
REPLAY = {"deploy": {"gates": {"replay": {"window": 8}}}}
BAD_TRAIN = """
def train(X, y, context):
    if context.segment == "JFK":
        raise ValueError("JFK data is broken today")
    from lightgbm import LGBMRegressor
    return LGBMRegressor(n_estimators=10, verbose=-1).fit(X.to_numpy(), y.to_numpy())
"""


def config(warehouse: Path, months: str, **changes: Any) -> dict[str, Any]:
    data = merge(BASE, {"data": {"source": str(warehouse)}})
    data = merge(data, {"data": {"query": f"SELECT * FROM flights WHERE month IN ({months})"}})
    # the newest fifth of each run's months is its holdout (the base splits on 2013-02-15)
    data = merge(data, {"evaluation": {"split": {"holdout_start": None, "kind": "time"}}})
    return merge(merge(merge(data, RETENTION), REPLAY), changes)


@dataclass
class History:
    base: Path
    home: Path
    expected: set[str]
    """Keys (relative to the artifact root) that gc must delete."""
    kept: set[str]
    """Keys that retention would let go but something still needs."""


def _backdate(home: Path, run_id: str, days: int) -> None:
    engine = sa.create_engine(f"sqlite:///{home / 'kiln.db'}")
    with engine.begin() as conn:
        conn.execute(
            sa.update(t.Run).where(t.Run.id == run_id).values(started_at=NOW - timedelta(days=days))
        )
    engine.dispose()


def _capture(day: int, i: int, stage: str, version: int) -> CaptureRecord:
    return CaptureRecord(
        request_id=f"d{day}-{stage}-{i}", ts=NOW - timedelta(days=day, minutes=i),
        pipeline=PIPELINE, version=version, stage=stage, segment="JFK", model="JFK",
        fallback=False, features={"origin": "JFK"}, prediction=1.0, error=None, latency_ms=1.0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, warehouse: Path) -> History:
    base = tmp_path_factory.mktemp("gc")
    home = base / ".kiln"
    settings = Settings(home=home)
    stores = open_stores(settings, upgrade=True)
    root = Path(settings.artifact_root)
    runner = Runner(settings, stores)
    runs: dict[str, str] = {}
    try:
        for name, months in (("v1", "1, 2"), ("v2", "2, 3"), ("v3", "3, 4"), ("v4", "5, 6")):
            path = base / f"kiln.{name}.yaml"
            path.write_text(yaml.safe_dump(config(warehouse, months), sort_keys=False))
            result = runner.run(load_config(path), force=True)
            runs[name] = result.run_id
        # a run whose JFK model failed to train: resumable, holds its snapshot and the models
        # of EWR and LGA (a resume reuses them)
        (base / "badtrain.py").write_text(BAD_TRAIN)
        failing = {"estimator": None, "params": None, "train": "badtrain:train"}
        path = base / "kiln.failed.yaml"
        changes = {"model": failing, "segments": {"on_segment_failure": "fail"}}
        path.write_text(yaml.safe_dump(config(warehouse, "4, 5", **changes), sort_keys=False))
        with pytest.raises(TrainingError):
            runner.run(load_config(path), force=True)
        with stores.metadata.read() as uow:
            failed = uow.runs.latest(PIPELINE)
            assert failed is not None and failed.status == "failed" and failed.data_digest
            task_models = {
                task.artifact_digest
                for task in uow.tasks.for_run(failed.id)
                if task.artifact_digest
            }
            assert len(task_models) >= 2  # EWR, LGA (and the fallback)
            records = {n: uow.versions.for_run(r) for n, r in runs.items()}
        # the stages of a registry with history
        with stores.metadata.unit_of_work() as uow:
            for name, stage in (("v1", "archived"), ("v2", "production"), ("v3", "shadow"),
                                ("v4", "archived")):  # fmt: skip
                record = records[name]
                assert record is not None
                uow.versions.set_stage(PIPELINE, record.version, stage)  # type: ignore[arg-type]
            # a gate result of the shadow version on day -15: its captures are evidence
            gate = uow.gates.record(PIPELINE, records["v3"].version, "replay", "passed", "ok", {})  # type: ignore[union-attr]
        for name, days in (("v1", 30), ("v2", 30), ("v3", 1), ("v4", 20)):
            _backdate(home, runs[name], days)
        _backdate(home, failed.id, 30)
        engine = sa.create_engine(f"sqlite:///{home / 'kiln.db'}")
        with engine.begin() as conn:
            conn.execute(
                sa.update(t.GateResult)
                .where(t.GateResult.id == gate.id)
                .values(evaluated_at=NOW - timedelta(days=15))
            )
            # v3's shadow period began 12 days ago: its shadow gate reads the captures since
            conn.execute(
                sa.update(t.ModelVersion)
                .where(t.ModelVersion.run_id == runs["v3"])
                .values(stage_changed_at=NOW - timedelta(days=12))
            )
        engine.dispose()

        # captures on days -20, -15, -10, -5, 0: production, plus shadow on day -10
        with CaptureWriter(str(root), writer_id="gc-test") as writer:
            for day in (20, 15, 10, 5, 0):
                for i in range(5):
                    assert writer.offer(_capture(day, i, "production", 2))
            for i in range(3):
                assert writer.offer(_capture(10, i, "shadow", 3))
        labels = LabelStore(str(root))
        table = pa.table({"key": ["d20-production-0"], "label": [3.0]})
        labels.add(PIPELINE, table, received_at=NOW - timedelta(days=20))
        labels.add(PIPELINE, table, received_at=NOW)
        old_orphan = stores.content.put(b"an orphan blob nobody registered")
        young_orphan = stores.content.put(b"an orphan written a minute ago")
    finally:
        stores.close()

    # every file is two days old (past the 1h grace), except the young orphan
    two_days = (NOW - timedelta(days=2)).timestamp()
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (two_days, two_days))
    young = root / "objects" / young_orphan[:2] / young_orphan
    os.utime(young, None)

    def day_files(day: int) -> set[str]:
        folder = (
            root
            / "captures"
            / f"pipeline={PIPELINE}"
            / f"date={(NOW - timedelta(days=day)).date()}"
        )
        return {str(p.relative_to(root)) for p in folder.glob("*.parquet")}

    label_files = sorted(p for p in (root / "labels").rglob("*.parquet"))
    assert len(label_files) == 2

    def obj(digest: str) -> str:
        return f"objects/{digest[:2]}/{digest}"

    snapshots = {n: r.lineage["data_digest"] for n, r in records.items() if r is not None}
    expected = {
        obj(snapshots["v1"]),  # archived, 30 days old
        obj(snapshots["v4"]),  # archived, 20 days old
        obj(old_orphan),
        *day_files(20),
        str(label_files[0].relative_to(root)),  # received 20 days ago
    }
    kept = {
        obj(snapshots["v2"]),  # production, 30 days old
        obj(failed.data_digest),  # resumable, 30 days old
        *map(obj, task_models),  # the models a resume reuses
        obj(young_orphan),  # younger than the grace
        *day_files(15),  # a gate's evidence
        *day_files(10),  # the shadow version's period
        *day_files(5),  # the replay gate's window
    }
    assert all((root / key).is_file() for key in expected | kept)
    assert len(day_files(20)) >= 1 and len(day_files(10)) >= 1 and len(day_files(15)) >= 1
    return History(base=base, home=home, expected=expected, kept=kept)


def _files(home: Path) -> set[str]:
    root = home / "artifacts"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_dry_run_lists_exactly_the_expired_and_deletes_nothing(history: History) -> None:
    before = _files(history.home)
    dry = kiln_cli("gc", "--json", cwd=history.base)
    assert dry.returncode == 0, dry.stderr
    listed = json.loads(dry.stdout)
    assert listed["applied"] is False
    assert {i["key"] for i in listed["items"]} == history.expected
    assert _files(history.home) == before
    kinds = listed["totals"]
    assert set(kinds[PIPELINE]) == {"snapshots", "captures", "labels"}
    assert kinds["*"]["orphans"]["files"] == 1
    assert all(i["bytes"] > 0 for i in listed["items"])
    text = kiln_cli("gc", cwd=history.base)
    assert "would delete" in text.stdout and "--apply" in text.stdout, text.stdout


def plan_all(history: History) -> Any:
    stores = open_stores(Settings(home=history.home))
    try:
        return plan_gc(stores, grace=timedelta(hours=1))
    finally:
        stores.close()


def test_pipeline_filter_leaves_orphans_out(history: History) -> None:
    stores = open_stores(Settings(home=history.home))
    try:
        plan = plan_gc(stores, grace=timedelta(hours=1), pipeline=PIPELINE)
        other = plan_gc(stores, grace=timedelta(hours=1), pipeline="another")
    finally:
        stores.close()
    orphans = {i.key for i in plan_all(history).items if i.kind == "orphans"}
    assert orphans and {i.key for i in plan.items} == history.expected - orphans
    assert other.items == []


def test_apply_deletes_exactly_those_and_every_version_still_loads(history: History) -> None:
    before = _files(history.home)
    applied = kiln_cli("gc", "--apply", "--json", cwd=history.base)
    assert applied.returncode == 0, applied.stderr
    assert {i["key"] for i in json.loads(applied.stdout)["items"]} == history.expected
    after = _files(history.home)
    assert before - after == history.expected
    assert history.kept <= after
    stores = open_stores(Settings(home=history.home))
    try:
        with stores.metadata.read() as uow:
            versions = uow.versions.list(PIPELINE)
            v2 = uow.versions.get(PIPELINE, 2).lineage["data_digest"]
            v2_snapshot = f"objects/{v2[:2]}/{v2}"
            audit = [e for e in uow.audit.list(PIPELINE) if e.action == "gc"]
            usage = uow.storage_usage.list(PIPELINE)
        for record in versions:  # every package is intact (digest-checked load)
            assert Version(stores, record).predictor.manifest["models"]
        assert audit and audit[0].details["captures"]["files"] >= 1
        assert {u.kind for u in usage} == {"packages", "snapshots", "captures", "labels"}
        # the archived v1 can still be rolled back to: promote it back to production
        stages = Stages(stores.metadata)
        stages.promote(PIPELINE, 1, actor="tests", reason="rollback target")
        with stores.metadata.read() as uow:
            assert uow.versions.get(PIPELINE, 1).stage == "production"
    finally:
        stores.close()
    # nothing else is expired; v2, archived by the promotion of v1, lets its old snapshot go
    again = json.loads(kiln_cli("gc", "--json", cwd=history.base).stdout)["items"]
    assert [(i["kind"], i["key"]) for i in again] == [("snapshots", v2_snapshot)]


def test_bad_grace_is_a_clear_error(history: History) -> None:
    result = kiln_cli("gc", "--grace", "soon", cwd=history.base)
    assert result.returncode != 0
    assert "--grace 'soon'" in result.stderr and "--grace 1h" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_retention_names_the_file_and_line(tmp_path: Path, warehouse: Path) -> None:
    data = config(warehouse, "1", capture={"retention": "a month"})
    path = tmp_path / "kiln.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "a month" in text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"kiln.yaml:{line}" in str(caught.value) and "retention" in str(caught.value)
    assert "30m" in str(caught.value)  # the expected form
    result = kiln_cli("validate", "kiln.yaml", cwd=tmp_path)
    assert result.returncode != 0 and f"kiln.yaml:{line}" in result.stderr + result.stdout


def test_gc_beside_a_concurrent_run_deletes_nothing_it_needs(
    tmp_path: Path, warehouse: Path
) -> None:
    """`kiln gc --apply --grace 0s` in a loop while `kiln run` trains: the run's snapshot is the
    same object as the expired snapshot of the archived v1 (same data), so a gc that deleted it
    between the run's store and its record would leave v2 without data."""
    changes = {"data": {"snapshot_retention": "1s"}, "capture": {"retention": "1s"}}
    (tmp_path / "kiln.yaml").write_text(
        yaml.safe_dump(config(warehouse, "1, 2", **changes), sort_keys=False)
    )
    first = kiln_cli("run", "kiln.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    home = tmp_path / ".kiln"
    stores = open_stores(Settings(home=home))
    with stores.metadata.unit_of_work() as uow:
        uow.versions.set_stage(PIPELINE, 1, "archived")
    stores.close()
    time.sleep(1.5)
    env = {**os.environ, "COLUMNS": "250", "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "run", "kiln.yaml", "--force"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # the CLI every few seconds, and the same plan and apply in this process in between, as
    # fast as they go (a CLI round alone takes longer than the run's riskiest moments)
    stores = open_stores(Settings(home=home))
    rounds, cli_rounds, deleted = 0, 0, 0
    last_cli = 0.0
    try:
        while run.poll() is None or cli_rounds < 2:
            if time.monotonic() - last_cli > 3:
                gc = kiln_cli("gc", "--apply", "--grace", "0s", "--json", cwd=tmp_path)
                assert gc.returncode == 0, gc.stderr
                deleted += len(json.loads(gc.stdout)["items"])
                cli_rounds += 1
                last_cli = time.monotonic()
            else:
                plan = plan_gc(stores, grace=timedelta(0))
                deleted += len(apply_gc(stores, plan, actor="tests").deleted)
                rounds += 1
    finally:
        stores.close()
    assert rounds > 10  # it ran all along the run
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.read() as uow:
            newest = max(uow.versions.list(PIPELINE), key=lambda v: v.version)
            old = uow.versions.get(PIPELINE, 1)
        assert newest.version == 2
        version = Version(stores, newest)
        assert version.predictor.manifest["models"]
        assert len(version.rows) > 1000  # its data snapshot is there and intact
        assert Version(stores, old).predictor.manifest["models"]  # archived package kept
    finally:
        stores.close()


@pytest.fixture
def expired_snapshot(tmp_path: Path, warehouse: Path, db_url: str) -> tuple[Settings, str]:
    """A home (metadata on SQLite and PostgreSQL) whose one run (succeeded, no version) is
    older than its 1s snapshot retention: its snapshot is what gc lets go."""
    settings = Settings(home=tmp_path / ".kiln", db_url=db_url)
    stores = open_stores(settings, upgrade=True)
    text = yaml.safe_dump(config(warehouse, "1", data={"snapshot_retention": "1s"}))
    try:
        digest = stores.content.put(b"the rows of an old run")
        with stores.metadata.unit_of_work() as uow:
            uow.pipelines.upsert(PIPELINE, "tests", "", "kiln.yaml")
            run = uow.runs.create(PIPELINE, "manual", text, "c" * 64, "kiln.yaml", "h", 1)
            uow.runs.update(run.id, data_digest=digest, started_at=NOW - timedelta(hours=1))
            uow.runs.mark_finished(run.id, "succeeded")
    finally:
        stores.close()
    return settings, digest


def test_a_running_run_keeps_every_content_object(expired_snapshot: tuple[Settings, str]) -> None:
    """A run stores its snapshot (or finds it stored) before it records it: while it runs, an
    object nobody records yet may be its own."""
    settings, digest = expired_snapshot
    stores = open_stores(settings)
    try:
        assert [i.digest for i in plan_gc(stores, grace=timedelta(0)).items] == [digest]
        with stores.metadata.unit_of_work() as uow:
            text = uow.runs.latest(PIPELINE).config_text  # type: ignore[union-attr]
            running = uow.runs.create(PIPELINE, "manual", text, "c" * 64, "kiln.yaml", "h", 2)
            uow.locks.acquire(PIPELINE, running.id, *host_and_pid(), STALE_AFTER)  # alive
        assert stores.content.put(b"the rows of an old run") == digest  # found, not written
        plan = plan_gc(stores, grace=timedelta(0))
        assert plan.items == [] and running.id in plan.notes[0]
        # a plan taken before the run started is planned again before deleting
        with stores.metadata.unit_of_work() as uow:
            uow.runs.mark_finished(running.id, "interrupted")
            uow.locks.release(PIPELINE, running.id)
        before = plan_gc(stores, grace=timedelta(0))
        assert [i.digest for i in before.items] == [digest]
        with stores.metadata.unit_of_work() as uow:
            again = uow.runs.create(PIPELINE, "manual", text, "c" * 64, "kiln.yaml", "h", 3)
            uow.locks.acquire(PIPELINE, again.id, *host_and_pid(), STALE_AFTER)
        result = apply_gc(stores, before, actor="tests")
        assert result.deleted == [] and [i.digest for i in result.kept] == [digest]
        assert stores.content.intact(digest)
        with stores.metadata.unit_of_work() as uow:
            uow.runs.update(again.id, data_digest=digest)
            uow.runs.mark_finished(again.id, "failed")
        # the failed run is resumable: it holds the snapshot now
        assert plan_gc(stores, grace=timedelta(0)).items == []
    finally:
        stores.close()
