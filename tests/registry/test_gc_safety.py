"""`kiln gc` where it could hurt: the captures the feature gate reads, a run left `running` by a
killed process, a store that fails part-way, big objects, a pass that crashed mid-way, and
absurd input. Real stores, real processes, a real immutable file for the failing delete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from kiln.errors import StoreError
from kiln.registry.gc import QUARANTINE, apply_gc, plan_gc
from kiln.settings import Settings
from kiln.stores import CaptureRecord, CaptureWriter, Stores, open_stores
from kiln.stores.metadata import tables as t
from tests.conftest import BASE, ROOT, kiln_cli, merge

PIPELINE = "flights-test"
NOW = datetime.now(UTC)


def _config(warehouse: Path, **changes: Any) -> str:
    data = merge(BASE, {"data": {"source": str(warehouse)}})
    return yaml.safe_dump(merge(data, changes), sort_keys=False)


def _run(
    stores: Stores, text: str, *, digest: str | None = None, ago: timedelta = timedelta(hours=1)
) -> str:
    """A succeeded run started ``ago`` with ``text`` as its config (its retention)."""
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert(PIPELINE, "tests", "", "kiln.yaml")
        run = uow.runs.create(PIPELINE, "manual", text, "c" * 64, "kiln.yaml", "h", 1)
        uow.runs.update(run.id, data_digest=digest, started_at=NOW - ago)
        uow.runs.mark_finished(run.id, "succeeded")
    return run.id


def _capture(day: int, i: int) -> CaptureRecord:
    return CaptureRecord(
        request_id=f"d{day}-{i}", ts=NOW - timedelta(days=day, minutes=i), pipeline=PIPELINE,
        version=1, stage="production", segment="JFK", model="JFK", fallback=False,
        features={"origin": "JFK"}, prediction=1.0, error=None, latency_ms=1.0,
    )  # fmt: skip


def _write_captures(settings: Settings, days: dict[int, int]) -> None:
    with CaptureWriter(settings.artifact_root, writer_id="gc-safety") as writer:
        for day, count in days.items():
            for i in range(count):
                assert writer.offer(_capture(day, i))


def _day(day: int) -> str:
    return f"date={(NOW - timedelta(days=day)).date()}"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Settings, Stores]]:
    settings = Settings(home=tmp_path / ".kiln")
    stores = open_stores(settings, upgrade=True)
    yield settings, stores
    stores.close()


def test_the_feature_gate_keeps_the_replay_window_when_replay_is_off(
    home: tuple[Settings, Stores], warehouse: Path
) -> None:
    """feature_availability reads the newest replay.window production captures whatever
    replay.enabled says: they are kept while either gate is on."""
    settings, stores = home
    replay_off = {"deploy": {"gates": {"replay": {"enabled": False, "window": 5}}}}
    _run(stores, _config(warehouse, capture={"retention": "1d"}, **replay_off))
    _write_captures(settings, {5: 3, 0: 2})  # the newest 5: today's 2 and 3 of day -5
    assert plan_gc(stores, grace=timedelta(0)).items == []
    # with the feature gate off as well, nothing reads them: day -5 is let go
    both_off = merge(replay_off, {"deploy": {"gates": {"feature_availability": False}}})
    _run(stores, _config(warehouse, capture={"retention": "1d"}, **both_off), ago=timedelta(0))
    listed = {i.key.split("/")[2] for i in plan_gc(stores, grace=timedelta(0)).items}
    assert listed == {_day(5)}


def test_a_run_left_running_by_a_dead_process_does_not_block_deletion(
    tmp_path: Path, warehouse: Path, db_url: str
) -> None:
    settings = Settings(home=tmp_path / ".kiln", db_url=db_url)
    stores = open_stores(settings, upgrade=True)
    try:
        text = _config(warehouse, data={"snapshot_retention": "1s"})
        digest = stores.content.put(b"the rows of an old run")
        _run(stores, text, digest=digest)
        # a process records a run and takes the pipeline's lock, then dies (as after SIGKILL)
        code = (
            "import os, sys\n"
            "from datetime import timedelta\n"
            "from kiln.settings import Settings\n"
            "from kiln.stores import open_stores\n"
            "stores = open_stores(Settings(home=sys.argv[1], db_url=sys.argv[2]))\n"
            "host = os.uname().nodename\n"
            "with stores.metadata.unit_of_work() as uow:\n"
            "    run = uow.runs.create(sys.argv[3], 'manual', sys.stdin.read(), 'c' * 64,\n"
            "                          'kiln.yaml', host, os.getpid())\n"
            "    uow.locks.acquire(sys.argv[3], run.id, host, os.getpid(), timedelta(minutes=2))\n"
            "print(run.id)\n"
            "os._exit(0)\n"  # no clean-up at all
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        dead = subprocess.run(
            [sys.executable, "-c", code, str(settings.home), db_url, PIPELINE],
            input=text, capture_output=True, text=True, env=env, check=True, timeout=120,
        ).stdout.strip()  # fmt: skip
        with stores.metadata.read() as uow:
            assert uow.runs.get(dead).status == "running"
            assert uow.locks.get(PIPELINE).run_id == dead  # type: ignore[union-attr]
        plan = plan_gc(stores, grace=timedelta(0))
        assert [i.digest for i in plan.items] == [digest]
        note = next(n for n in plan.notes if dead in n)
        assert "is gone" in note and "interrupted" in note
        # the same run, its lock on another host and silent for 10 minutes: stale, so dead
        with stores.metadata.unit_of_work() as uow:
            uow.locks.release(PIPELINE, dead)
            uow.locks.acquire(PIPELINE, dead, "elsewhere", 1, timedelta(minutes=2))
        with stores.metadata.engine.begin() as conn:
            conn.execute(sa.update(t.PipelineLock).values(heartbeat_at=NOW - timedelta(minutes=10)))
        plan = plan_gc(stores, grace=timedelta(0))
        assert [i.digest for i in plan.items] == [digest]
        assert "no heartbeat for" in next(n for n in plan.notes if dead in n)
        # a live lock (this process, beating) still keeps every content object
        with stores.metadata.unit_of_work() as uow:
            uow.locks.release(PIPELINE, dead)
            uow.locks.acquire(PIPELINE, dead, os.uname().nodename, os.getpid(), timedelta(1))
        assert plan_gc(stores, grace=timedelta(0)).items == []
    finally:
        stores.close()


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files made immutable (chattr +i: even root cannot delete them), made mutable again."""
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_a_failing_delete_audits_and_measures_what_was_deleted(
    home: tuple[Settings, Stores], warehouse: Path, immutable: list[Path]
) -> None:
    settings, stores = home
    no_reader = {"gates": {"replay": {"enabled": False}, "feature_availability": False}}
    _run(stores, _config(warehouse, capture={"retention": "1d"}, deploy=no_reader))
    _write_captures(settings, {5: 2, 3: 2})
    orphans = [stores.content.put(f"orphan {i}".encode()) for i in range(2)]
    root = Path(settings.artifact_root)
    stuck = sorted((root / "captures" / f"pipeline={PIPELINE}" / _day(3)).glob("*.parquet"))[0]
    if shutil.which("chattr") is None:
        pytest.skip("no chattr here")
    made = subprocess.run(["chattr", "+i", str(stuck)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make a file immutable here: {made.stderr!r}")
    immutable.append(stuck)

    plan = plan_gc(stores, grace=timedelta(0))
    assert {i.kind for i in plan.items} == {"orphans", "captures"}
    with pytest.raises(StoreError) as caught:
        apply_gc(stores, plan, actor="tests")
    assert "stopped part-way" in str(caught.value) and str(stuck.name) in str(caught.value)
    assert "audited" in (caught.value.hint or "")
    assert not any(stores.content.exists(d) for d in orphans)  # deleted before the error
    assert stuck.is_file()
    with stores.metadata.read() as uow:
        audit = {e.pipeline: e.details for e in uow.audit.list(None) if e.action == "gc"}
        usage = uow.storage_usage.list(PIPELINE)
    assert audit["*"]["orphans"]["files"] == 2
    deleted = audit[PIPELINE]["captures"]["files"]
    assert deleted >= 1  # day -5's file(s), deleted before the stuck one
    assert not (root / "captures" / f"pipeline={PIPELINE}" / _day(5)).exists() or not any(
        (root / "captures" / f"pipeline={PIPELINE}" / _day(5)).glob("*.parquet")
    )
    assert usage and {u.kind for u in usage} >= {"captures"}
    assert not stores.content.store.stat(QUARANTINE)  # nothing left half-deleted
    # through the CLI: a clear error, no traceback
    result = kiln_cli("gc", "--apply", "--grace", "0s", cwd=settings.home.parent)
    assert result.returncode != 0
    assert "stopped part-way" in result.stderr and "Traceback" not in result.stderr


def test_deleting_a_big_object_does_not_read_it(
    home: tuple[Settings, Stores], warehouse: Path
) -> None:
    _, stores = home
    _run(stores, _config(warehouse))
    size = 48 * 1024 * 1024
    digest = stores.content.put(os.urandom(size))
    plan = plan_gc(stores, grace=timedelta(0))
    assert [i.digest for i in plan.items] == [digest]
    tracemalloc.start()
    try:
        result = apply_gc(stores, plan, actor="tests")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [i.digest for i in result.deleted] == [digest]
    assert not stores.content.exists(digest)
    assert peak < size // 4, f"peak {peak:,} bytes traced for a {size:,}-byte object"


def test_what_a_crashed_pass_left_in_quarantine_is_put_back(
    home: tuple[Settings, Stores], warehouse: Path
) -> None:
    _, stores = home
    _run(stores, _config(warehouse))
    store = stores.content.store
    lost = stores.content.put(b"moved to quarantine, then the gc process was killed")
    rewritten = stores.content.put(b"moved to quarantine, then a run wrote it again")
    for digest in (lost, rewritten):
        assert store.move(stores.content.key_of(digest), f"{QUARANTINE}crashed/{digest}")
    stores.content.put(b"moved to quarantine, then a run wrote it again")
    plan = plan_gc(stores, grace=timedelta(0))
    assert any("quarantine" in n for n in plan.notes)
    assert [i.digest for i in plan.items] == [rewritten]  # the lost one is not in objects/
    result = apply_gc(stores, plan, actor="tests")
    assert stores.content.intact(lost)  # put back, kept by this pass (not in its first plan)
    assert [i.digest for i in result.deleted] == [rewritten]
    assert store.stat(QUARANTINE) == []
    assert any("put back" in n for n in result.plan.notes)


def test_an_absurd_grace_is_a_usage_error(home: tuple[Settings, Stores]) -> None:
    tmp_path = home[0].home.parent
    for grace in ("99999999999d", "800000d"):
        result = kiln_cli("gc", "--grace", grace, cwd=tmp_path)
        assert result.returncode != 0
        assert f"--grace {grace!r} is too long" in result.stderr, result.stderr
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    listed = kiln_cli("gc", "--grace", "3650d", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["items"] == []
