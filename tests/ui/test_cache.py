"""Reports kept by the UI: answered at once while fresh, recomputed in the background when
stale (the stale figures answered meanwhile), computed once for concurrent first callers, and
an error is never kept."""

from __future__ import annotations

import threading
import time

import pytest

from kiln.ui._cache import Recent


def test_fresh_then_stale_then_recomputed_in_the_background() -> None:
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    recent = Recent(0.2)
    try:
        first = recent.get("k", compute)
        assert first.value == 1 and recent.get("k", compute).value == 1
        time.sleep(0.25)
        assert recent.get("k", compute).value == 1  # stale: answered at once
        deadline = time.monotonic() + 5
        while recent.get("k", compute).value != 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert recent.get("k", compute).computed_at > first.computed_at
    finally:
        recent.close()


def test_concurrent_first_callers_wait_for_one_computation() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def slow() -> str:
        calls.append(1)
        gate.wait(5)
        return "done"

    recent = Recent(60)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(recent.get("k", slow).value))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == ["done"] * 4 and len(calls) == 1
    recent.close()


def test_an_error_reaches_the_caller_and_is_not_kept() -> None:
    recent = Recent(60)

    def broken() -> int:
        raise RuntimeError("database away")

    with pytest.raises(RuntimeError, match="away"):
        recent.get("k", broken)
    assert recent.get("k", lambda: 7).value == 7
    assert Recent(0).get("k", lambda: 8).value == 8  # 0: never kept
    recent.close()
