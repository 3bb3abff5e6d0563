"""Training cost on real runs of the flights example: segments add up to the run, runs to the
pipeline; a resumed run counts its failed attempt; a task's own memory is its own; a missing
measurement is unknown, never 0; gates checked outside a run are charged."""

from __future__ import annotations

import math
import os
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kiln.config.prices import resolve_prices
from kiln.errors import TrainingError
from kiln.monitoring.cost.model import GIB
from kiln.monitoring.cost.report import cost_report
from kiln.monitoring.cost.rightsize import HEADROOM, rightsizing, size_text, suggest_memory
from kiln.monitoring.cost.training import run_cost, training_items
from kiln.release.controller import Release
from kiln.runs.runner import Runner
from kiln.settings import Prices, Settings
from kiln.stores import Stores

pytestmark = pytest.mark.slow

MiB = 2**20
P = "flights-test"
PRICES = Prices(vcpu_hour=0.04, memory_gib_hour=0.005, training_spot_discount=0.5)


def _near(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


def test_segments_add_up_to_the_run_and_memory_is_the_tasks_own(
    make_config, runner: Runner, stores: Stores
) -> None:
    result = runner.run(make_config(resources={"cpus": 2, "memory": "1GiB"}))
    cost = run_cost(stores.metadata, PRICES, result.run_id)
    assert cost.unknown == [] and cost.notes == []
    assert cost.pipeline == P and cost.version == result.version
    advice = next(a for a in rightsizing(stores.metadata, P) if a.resource == "memory")
    assert advice.requested == GIB  # 1GiB for tasks of a few MiB
    assert advice.text.startswith("memory 1GiB requested, ") and "lower it to" in advice.text
    assert cost.total_usd is not None and cost.total_usd > 0
    assert cost.shared_usd is not None and cost.shared_usd > 0
    assert set(cost.by_segment) == {"EWR", "JFK", "LGA", "__fallback__"}
    assert _near(sum(v or 0.0 for v in cost.by_segment.values()), cost.total_usd)
    assert _near(sum(i.usd or 0.0 for i in cost.items), cost.total_usd)
    shared = [i for i in cost.items if i.detail == "shared"]
    assert _near(sum(i.usd or 0.0 for i in shared), cost.shared_usd)
    with stores.metadata.read() as uow:
        tasks = {t.segment: t for t in uow.tasks.for_run(result.run_id)}
        train = next(s for s in uow.steps.for_run(result.run_id) if s.name == "train")
    assert train.details["workers"] == 2 and train.details["threads_per_task"] == 1
    for item in cost.items:
        assert item.kind == "training" and item.run_id == result.run_id
        if item.detail == "task":  # 1 thread and 1 GiB reserved (base included), or more
            task = tasks[item.segment or ""]
            assert item.cpu_seconds == pytest.approx(max(task.wall_seconds, task.cpu_seconds))
            gib = (GIB - task.base_memory_bytes) / GIB  # type: ignore[operator]
            assert item.memory_gib_seconds == pytest.approx(gib * task.wall_seconds)
            expected = item.cpu_seconds * 0.04 + item.memory_gib_seconds * 0.005
            assert item.usd == pytest.approx(expected / 3600 * 0.5)
    own = {k: t.own_memory_bytes for k, t in tasks.items()}
    assert all(v is not None for v in own.values())
    peak = max(t.peak_memory_bytes for t in tasks.values())
    assert max(own.values()) < peak / 4  # type: ignore[type-var]
    assert own["__fallback__"] > min(own.values())  # type: ignore[operator]
    for t in tasks.values():
        assert t.base_memory_bytes is not None and 50 * MiB < t.base_memory_bytes
        assert t.base_memory_bytes <= t.peak_memory_bytes


def test_runs_add_up_to_the_pipeline_over_a_period(
    make_config, runner: Runner, stores: Stores, settings: Settings
) -> None:
    since = datetime.now(UTC)
    first = runner.run(make_config())
    second = runner.run(make_config(resources=None), force=True)
    until = datetime.now(UTC) + timedelta(seconds=1)
    prices = resolve_prices(settings)
    totals = [run_cost(stores.metadata, prices, r.run_id).total_usd for r in (first, second)]
    assert all(t is not None and t > 0 for t in totals)
    items = training_items(stores.metadata, prices, since=since, until=until, pipeline=P)
    assert {i.run_id for i in items} == {first.run_id, second.run_id}
    assert _near(sum(i.usd or 0.0 for i in items), sum(totals))  # type: ignore[arg-type]
    before = training_items(stores.metadata, prices, since=since - timedelta(days=1), until=since)
    assert before == []
    assert training_items(stores.metadata, prices, since=since, until=until, pipeline="x") == []
    selects: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        selects.extend([statement] if statement.lstrip().upper().startswith("SELECT") else [])

    sa.event.listen(stores.metadata.engine, "before_cursor_execute", count)
    try:  # a page of the catalogue: the same items, in four queries whatever the runs
        page = training_items(stores.metadata, prices, since=since, until=until, pipelines={P, "x"})
    finally:
        sa.event.remove(stores.metadata.engine, "before_cursor_execute", count)
    assert page == items and len(selects) == 4
    assert training_items(stores.metadata, prices, since=since, until=until, pipelines={"x"}) == []
    # resources unset: one line each saying what they would be
    advice = {a.resource: a for a in rightsizing(stores.metadata, P)}
    assert advice["memory"].requested is None and advice["cpus"].requested is None
    assert advice["memory"].text.startswith("memory unset, ")
    assert f"resources.memory: {size_text(advice['memory'].suggested or 0)} would fit" in (
        advice["memory"].text
    )
    assert "resources.cpus: " in advice["cpus"].text
    of_first = {a.resource: a for a in rightsizing(stores.metadata, P, run_id=first.run_id)}
    assert of_first["memory"].requested is None  # the first run asked for 2 cpus
    assert "cpus" not in of_first or of_first["cpus"].requested == 2


def test_rightsizing_raises_a_passed_limit_and_lowers_idle_cpus(
    make_config, stores: Stores, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / ".kiln", max_workers=2)
    result = Runner(settings, stores).run(make_config(resources={"cpus": 8, "memory": "100MiB"}))
    advice = {a.resource: a for a in rightsizing(stores.metadata, P)}
    memory, cpus = advice["memory"], advice["cpus"]
    assert memory.requested == 100 * MiB and memory.used > 100 * MiB
    assert memory.suggested is not None and memory.suggested >= memory.used * HEADROOM
    assert memory.text.startswith("memory 100MiB requested, ")
    assert memory.text.endswith(f": raise it to {size_text(memory.suggested)}")
    assert cpus.text == "cpus 8 requested, 4 tasks: lower it to 4" and cpus.suggested == 4
    cost = run_cost(stores.metadata, PRICES, result.run_id)
    with stores.metadata.read() as uow:
        walls = {t.segment: t.wall_seconds for t in uow.tasks.for_run(result.run_id)}
    for item in cost.items:
        if item.detail == "task":  # 2 workers of 8 // 2 = 4 threads each
            assert item.cpu_seconds == pytest.approx(4 * walls[item.segment or ""])


@pytest.mark.parametrize(
    ("used", "expected"),
    [(310 * MiB, "512MiB"), (100 * MiB, "192MiB"), (700 * MiB, "1.5GiB"), (2**30, "1.5GiB")],
)
def test_suggested_memory_has_headroom_and_a_round_size(used: int, expected: str) -> None:
    assert size_text(suggest_memory(used)) == expected


def test_a_resumed_run_counts_its_failed_attempt(
    make_config, runner: Runner, stores: Stores, tmp_path: Path
) -> None:
    flag = tmp_path / "jfk-broken"
    flag.write_text("yes")
    (tmp_path / "flaky.py").write_text(
        textwrap.dedent(f"""
        import os
        from lightgbm import LGBMRegressor

        def train(X, y, context):
            model = LGBMRegressor(n_estimators=10, verbose=-1).fit(X.to_numpy(), y.to_numpy())
            if context.segment == "JFK" and os.path.exists({str(flag)!r}):
                raise ValueError("JFK data is broken today")
            return model
        """)
    )
    loaded = make_config(
        model={"estimator": None, "params": None, "train": "flaky:train"},
        segments={"on_segment_failure": "fail"},
    )
    with pytest.raises(TrainingError):
        runner.run(loaded)
    with stores.metadata.read() as uow:
        [run] = uow.runs.list(P)
    failed = run_cost(stores.metadata, PRICES, run.id)  # a failed run is counted too
    assert run.status == "failed" and failed.total_usd is not None and failed.total_usd > 0
    assert not any(i.detail == "retry" for i in failed.items)
    os.remove(flag)
    result = runner.resume(run.id)
    cost = run_cost(stores.metadata, PRICES, result.run_id)
    assert cost.unknown == [] and cost.total_usd is not None
    [retry] = [i for i in cost.items if i.detail == "retry"]
    assert retry.segment == "JFK" and retry.usd is not None and retry.usd > 0
    assert _near(sum(v or 0.0 for v in cost.by_segment.values()), cost.total_usd)
    with stores.metadata.read() as uow:
        jfk = next(t for t in uow.tasks.for_run(run.id) if t.segment == "JFK")
        train = next(s for s in uow.steps.for_run(run.id) if s.name == "train")
    assert jfk.attempt == 2 and jfk.earlier_attempts is not None
    assert [a["status"] for a in jfk.earlier_attempts] == ["failed"]
    assert train.earlier_attempts is not None and train.earlier_attempts[0]["status"] == "failed"
    # the failed attempt costs in the resumed run what it cost in the failed run
    [was] = [i for i in failed.items if i.detail == "task" and i.segment == "JFK"]
    assert retry.usd == pytest.approx(was.usd)
    assert retry.cpu_seconds == pytest.approx(was.cpu_seconds)


def test_a_step_without_measurement_is_unknown_never_zero(
    make_config, runner: Runner, stores: Stores
) -> None:
    result = runner.run(make_config())
    with stores.metadata.unit_of_work() as uow:  # a resume that died during its extract step
        uow.runs.update(result.run_id, status="running", finished_at=None)
        uow.steps.start(result.run_id, "extract")
    cost = run_cost(stores.metadata, PRICES, result.run_id)
    assert cost.total_usd is None  # a lower bound: the running step is an item of its own
    assert any("extract" in u for u in cost.unknown)
    [running] = [i for i in cost.items if i.usd is None]
    assert running.detail == "running" and running.segment is None
    assert cost.shared_usd is not None and all(v is not None for v in cost.by_segment.values())
    assert {i.detail: i.usd for i in cost.items if i.detail == "task"} != {}


def test_a_killed_step_attempt_is_an_unknown_item_and_the_rest_stays_known(
    make_config, runner: Runner, stores: Stores, settings: Settings
) -> None:
    since = datetime.now(UTC)
    result = runner.run(make_config())
    was = run_cost(stores.metadata, PRICES, result.run_id)
    with stores.metadata.unit_of_work() as uow:  # a resume whose extract was SIGKILLed ...
        uow.steps.start(result.run_id, "extract")
        uow.steps.start(result.run_id, "extract")  # ... and the resume after it
        uow.steps.finish(result.run_id, "extract", "succeeded", wall_seconds=2.0,
                         cpu_seconds=1.0, peak_memory_bytes=100 * MiB)  # fmt: skip
    cost = run_cost(stores.metadata, PRICES, result.run_id)
    [killed] = [i for i in cost.items if i.usd is None]
    assert killed.detail == "killed" and killed.run_id == result.run_id
    assert killed.segment is None and killed.kind == "training"
    assert any("extract attempt 2" in u for u in cost.unknown), cost.unknown
    assert cost.total_usd is None
    assert cost.shared_usd is not None and was.shared_usd is not None
    assert cost.shared_usd > was.shared_usd  # the measured retry of extract is counted
    assert all(v is not None for v in cost.by_segment.values())
    known = sum(i.usd or 0.0 for i in cost.items)
    assert _near(known, sum(v or 0.0 for v in cost.by_segment.values()))
    until = datetime.now(UTC) + timedelta(seconds=1)
    report = cost_report(stores.metadata, PRICES, since=since, until=until, pipeline=P)
    [pipeline] = report.pipelines
    training = pipeline.by_kind["training"]
    assert training.unknown == 1 and training.usd == pytest.approx(known)
    assert training.text().startswith("≥ $")  # a lower bound, not unknown
    lines = run_cost_lines(cost)
    assert re.search(r"│ run +│ .* │ ≥ 0\.0\d+ │", lines), lines


def run_cost_lines(cost: object) -> str:
    from rich.console import Console

    from kiln.cli._run_cost import _table

    console = Console(width=200, record=True)
    console.print(_table(cost, "t"))
    return console.export_text()


def _expected(stores: Stores, run_id: str, memory: int | None) -> tuple[float, float]:
    """(vCPU-seconds, GiB-seconds) of a run charged as OpenCost would, from its records: each
    worker max(requested, used) for its life (threads x wall cores; max(R, B + own) while it
    trains, max(R, B) while it idles), the run's process and its other steps."""
    with stores.metadata.read() as uow:
        tasks = uow.tasks.for_run(run_id)
        steps = uow.steps.for_run(run_id)
    train = next(s for s in steps if s.name == "train")
    workers, threads = train.details["workers"], train.details["threads_per_task"]
    r = memory or 0
    cpu = memory_s = busy = 0.0
    for t in tasks:
        base = t.base_memory_bytes or 0
        own = t.peak_memory_bytes - base
        cpu += max(threads * t.wall_seconds, t.cpu_seconds)
        memory_s += max(r, base + own) * t.wall_seconds
        busy += t.wall_seconds
    mean_base = sum(t.base_memory_bytes or 0 for t in tasks) / len(tasks)  # one attempt each
    cpu = max(cpu, workers * threads * train.wall_seconds)
    memory_s += max(r, mean_base) * (workers * train.wall_seconds - busy)
    for s in steps:
        cpu += s.cpu_seconds if s.name == "train" else max(s.wall_seconds, s.cpu_seconds)
        memory_s += s.peak_memory_bytes * s.wall_seconds
    return cpu, memory_s / GIB


@pytest.mark.parametrize("memory", ["1GiB", None])
def test_threads_and_the_memory_limit_are_charged_once(
    make_config, stores: Stores, settings: Settings, memory: str | None
) -> None:
    one_worker = Runner(settings.model_copy(update={"max_workers": 1}), stores)
    result = one_worker.run(make_config(resources={"cpus": 2, "memory": memory}))
    cost = run_cost(stores.metadata, PRICES, result.run_id)
    assert cost.unknown == [] and cost.total_usd is not None
    with stores.metadata.read() as uow:
        train = next(s for s in uow.steps.for_run(result.run_id) if s.name == "train")
        tasks = {t.segment: t for t in uow.tasks.for_run(result.run_id)}
    assert train.details["workers"] == 1 and train.details["threads_per_task"] == 2
    limit = None if memory is None else GIB
    cpu, gib_seconds = _expected(stores, result.run_id, limit)
    assert sum(i.cpu_seconds or 0.0 for i in cost.items) == pytest.approx(cpu)
    assert sum(i.memory_gib_seconds or 0.0 for i in cost.items) == pytest.approx(gib_seconds)
    for item in cost.items:
        if item.detail == "task":
            t = tasks[item.segment or ""]
            base = t.base_memory_bytes or 0
            own = t.peak_memory_bytes - base
            expected = max((limit or 0) - base, own) / GIB * t.wall_seconds
            assert item.memory_gib_seconds == pytest.approx(expected)


def test_gates_checked_outside_a_run_are_charged(
    make_config, runner: Runner, stores: Stores, settings: Settings
) -> None:
    result = runner.run(make_config())
    assert result.version is not None
    since = datetime.now(UTC)
    recheck = Release(settings, stores).evaluate(P, result.version)
    until = datetime.now(UTC) + timedelta(seconds=1)
    assert recheck.results and all(r.usage is not None for r in recheck.results)
    items = training_items(stores.metadata, PRICES, since=since, until=until, pipeline=P)
    gates = [i for i in items if i.detail.startswith("gate:")]
    assert {i.detail for i in gates} == {f"gate:{r.gate}" for r in recheck.results}
    for item in gates:
        assert item.segment is None and item.version == result.version
        assert item.usd is not None and item.usd > 0
        assert item.cpu_seconds is not None and item.memory_gib_seconds is not None
        assert item.cpu_seconds > 0 and item.memory_gib_seconds > 0


def test_kiln_run_prints_the_cost_table_and_the_advice(make_config, cli, tmp_path: Path) -> None:
    loaded = make_config(resources={"cpus": 2, "memory": "4GiB"})
    home = tmp_path / "home"
    done = cli("--home", str(home), "run", str(loaded.path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert re.search(r"training cost of run [0-9a-f]{12} \(USD\)", text)
    for segment in ("EWR", "JFK", "LGA", "(fallback)"):
        assert re.search(rf"│ {re.escape(segment)} +│ +0\.0\d+ │ +0\.0\d+ │", text), segment
    assert re.search(r"│ run +│ +0\.0\d+ │ +0\.0\d+ │ +│ +0\.0\d+ │", text)
    assert re.search(r"right-sizing: memory 4GiB requested, \d+ MiB peak .*: lower it to", text)
    assert "unknown" not in text and "Traceback" not in done.stderr
