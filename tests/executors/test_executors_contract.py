"""The executor contract, run on every backend, plus what only the local pool promises."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC

import executor_tasks as tasks
import numpy as np
import pytest

from kiln.errors import ExecutorError
from kiln.executors import Executor, TaskOutcome, make_executor

MiB = 2**20


@pytest.fixture(scope="module", params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """One executor of each kind per module: a local pool, a local Ray cluster of 2 CPUs."""
    if request.param == "ray":
        request.getfixturevalue("ray_available")
    ex = make_executor(request.param, workers=2)
    ex.warm_up()
    yield ex
    ex.close()


def by_key(outcomes: Iterator[TaskOutcome[object]]) -> dict[str, TaskOutcome[object]]:
    result: dict[str, TaskOutcome[object]] = {}
    for outcome in outcomes:
        assert outcome.key not in result
        result[outcome.key] = outcome
    return result


class TestExecutorContract:
    def test_one_outcome_per_key_with_its_value(self, executor: Executor) -> None:
        outcomes = by_key(executor.map(tasks.square, [(f"k{i}", i) for i in range(8)]))
        assert {k: o.value for k, o in outcomes.items()} == {f"k{i}": i * i for i in range(8)}
        for o in outcomes.values():
            assert o.ok and o.error is None
            assert o.started_at.tzinfo == UTC and o.started_at <= o.finished_at

    def test_a_raising_task_is_isolated(self, executor: Executor) -> None:
        outcomes = by_key(
            executor.map(tasks.fail_on_negative, [("good1", 1), ("bad", -1), ("good2", 2)])
        )
        bad = outcomes["bad"]
        assert not bad.ok and bad.value is None
        assert bad.error is not None
        assert bad.error.startswith("ValueError: negative input -1")
        assert "fail_on_negative" in bad.error  # the traceback's last frames
        assert outcomes["good1"].value == 1 and outcomes["good2"].value == 2

    def test_outcomes_come_in_completion_order(self, executor: Executor) -> None:
        order = [
            o.key for o in executor.map(tasks.sleep_then_return, [("slow", 1.0), ("fast", 0.05)])
        ]
        assert order == ["fast", "slow"]

    def test_wall_and_cpu_time_are_measured(self, executor: Executor) -> None:
        [outcome] = executor.map(tasks.spin, [("spin", 0.2)])
        assert outcome.usage.wall_seconds >= 0.19
        assert outcome.usage.cpu_seconds > 0.1

    def test_peak_memory_is_per_task(self, executor: Executor) -> None:
        [big] = executor.map(tasks.allocate, [("big", (200, 0.0))])
        assert big.ok, big.error
        assert big.usage.peak_memory_bytes >= 200 * MiB
        # Find a tiny task that ran in the same worker: the high-water mark must have been reset.
        for attempt in range(10):
            round_ = [(f"tiny{attempt}-{i}", (0, 0.2)) for i in range(2)]
            same_worker = [o for o in executor.map(tasks.allocate, round_) if o.value == big.value]
            if same_worker:
                break
        else:
            pytest.fail(f"no tiny task ran in worker {big.value} again")
        assert same_worker[0].usage.peak_memory_bytes < big.usage.peak_memory_bytes - 150 * MiB

    def test_own_memory_is_peak_minus_the_workers_base(self, executor: Executor) -> None:
        outcomes = by_key(executor.map(tasks.allocate, [("big", (200, 0.0)), ("tiny", (0, 0.0))]))
        big, tiny = outcomes["big"].usage, outcomes["tiny"].usage
        for u in (big, tiny):
            assert u.base_memory_bytes is not None
            assert 10 * MiB < u.base_memory_bytes <= u.peak_memory_bytes  # the interpreter
        assert big.own_memory_bytes is not None and tiny.own_memory_bytes is not None
        assert 190 * MiB <= big.own_memory_bytes <= 260 * MiB
        assert tiny.own_memory_bytes < 20 * MiB < tiny.peak_memory_bytes

    def test_print_and_logging_are_captured(self, executor: Executor) -> None:
        [outcome] = executor.map(tasks.chatty, [("talk", 7)])
        assert "hello from task 7" in outcome.log
        assert "to stderr 7" in outcome.log
        assert "WARNING kiln.tests.executor_tasks: careful with 7" in outcome.log
        assert "INFO kiln.tests.executor_tasks: info line 7" in outcome.log

    def test_a_long_log_keeps_its_start_and_end(self, executor: Executor) -> None:
        [outcome] = executor.map(tasks.flood, [("flood", 300_000)])
        assert len(outcome.log.encode()) <= 64 * 1024
        assert outcome.log.startswith("FIRST-LINE")
        assert outcome.log.rstrip().endswith("LAST-LINE")
        assert "truncated" in outcome.log

    def test_a_50_mb_numpy_payload_round_trips(self, executor: Executor) -> None:
        payload = np.random.default_rng(0).random(50 * MiB // 8)
        [outcome] = executor.map(tasks.identity, [("payload", payload)])
        assert outcome.ok, outcome.error
        assert isinstance(outcome.value, np.ndarray)
        np.testing.assert_array_equal(outcome.value, payload)

    def test_native_threads_are_capped(self, executor: Executor) -> None:
        [outcome] = executor.map(tasks.thread_env, [("env", None)])
        assert outcome.value == "1"  # threads_per_task defaults to 1

    def test_duplicate_keys_are_refused(self, executor: Executor) -> None:
        with pytest.raises(ValueError, match="duplicate task key 'a'"):
            executor.map(tasks.square, [("a", 1), ("a", 2)])


class TestLocalExecutor:
    def test_a_tasks_own_memory_includes_its_inputs(self) -> None:
        payload = np.ones(120 * MiB, dtype=np.uint8)
        with make_executor("local", workers=1) as ex:
            [small] = ex.map(tasks.square, [("small", 3)])
            [big] = ex.map(tasks.checksum, [("big", payload)])
        assert small.usage.own_memory_bytes is not None and big.usage.own_memory_bytes is not None
        assert big.usage.own_memory_bytes >= 120 * MiB > 100 * MiB > small.usage.own_memory_bytes
        assert big.usage.base_memory_bytes is not None
        assert big.usage.base_memory_bytes < big.usage.peak_memory_bytes - 120 * MiB

    def test_a_dead_worker_fails_only_its_task(self) -> None:
        work: list[tuple[str, str | float]] = [
            ("crash", "crash"),
            ("slow", 1.0),
            ("a", 0.1),
            ("b", 0.1),
        ]
        with make_executor("local", workers=2) as ex:
            outcomes = by_key(ex.map(tasks.crash_or_sleep, work))
            crash = outcomes.pop("crash")
            assert crash.error is not None
            assert crash.error.startswith("worker process died (exit code 3")
            assert all(o.ok for o in outcomes.values()), outcomes
            # The pool was rebuilt: the executor is still usable.
            assert [o.value for o in ex.map(tasks.square, [("after", 3)])] == [9]

    def test_a_worker_killed_between_maps_is_replaced(self) -> None:
        with make_executor("local", workers=2) as ex:
            [first] = ex.map(tasks.worker_pid, [("pid", None)])
            assert isinstance(first.value, int)
            os.kill(first.value, signal.SIGKILL)
            time.sleep(0.2)
            outcomes = by_key(ex.map(tasks.square, [(f"k{i}", i) for i in range(4)]))
        assert {k: o.value for k, o in outcomes.items()} == {f"k{i}": i * i for i in range(4)}

    def test_warm_up_then_map(self) -> None:
        with make_executor("local", workers=2) as ex:
            ex.warm_up()
            outcomes = by_key(ex.map(tasks.square, [("x", 2), ("y", 3)]))
        assert {k: o.value for k, o in outcomes.items()} == {"x": 4, "y": 9}

    def test_two_workers_run_two_tasks_at_once(self) -> None:
        with make_executor("local", workers=2) as ex:
            ex.warm_up()
            list(ex.map(tasks.square, [("w1", 1), ("w2", 2)]))
            start = time.perf_counter()
            outcomes = list(ex.map(tasks.sleep_then_return, [("s1", 1.0), ("s2", 1.0)]))
            elapsed = time.perf_counter() - start
        assert all(o.ok for o in outcomes)
        assert elapsed < 1.8

    def test_an_unpicklable_result_is_that_tasks_error(self) -> None:
        with make_executor("local", workers=1) as ex:
            outcomes = by_key(ex.map(tasks.unpicklable_result, [("lambda", None)]))
            outcomes.update(by_key(ex.map(tasks.square, [("fine", 4)])))
        error = outcomes["lambda"].error
        assert error is not None and error.startswith("the task's result cannot be pickled")
        assert outcomes["fine"].value == 16

    def test_native_threads_are_limited_per_task(self) -> None:
        with make_executor("local", workers=1, threads_per_task=3) as ex:
            [outcome] = ex.map(tasks.thread_env, [("env", None)])
        assert outcome.value == "3"

    def test_per_task_overhead_is_reported(
        self, record_property: Callable[[str, object], None]
    ) -> None:
        """Measured, not asserted: the pool's cost per no-op task over a plain loop."""
        n = 200
        with make_executor("local", workers=2) as ex:
            ex.warm_up()
            list(ex.map(tasks.identity, [(f"w{i}", i) for i in range(4)]))
            start = time.perf_counter()
            outcomes = list(ex.map(tasks.identity, [(f"t{i}", i) for i in range(n)]))
            pooled = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(n):
            tasks.identity(i)
        looped = time.perf_counter() - start
        assert len(outcomes) == n and all(o.ok for o in outcomes)
        per_task_ms = (pooled - looped) / n * 1000
        record_property("local_overhead_ms_per_task", round(per_task_ms, 3))
        sys.stderr.write(f"\nlocal executor overhead: {per_task_ms:.3f} ms per task\n")


class TestRayErrors:
    def test_missing_extra_is_named(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "ray", None)
        with pytest.raises(ExecutorError, match=r"pip install 'kiln\[ray\]'"):
            make_executor("ray", workers=1)

    def test_unreachable_address_is_named(self, ray_available: None) -> None:
        with pytest.raises(ExecutorError, match=re.escape("127.0.0.1:1")) as info:
            make_executor("ray", workers=1, ray_address="127.0.0.1:1")
        assert "ray start --head" in str(info.value)
