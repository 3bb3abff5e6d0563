"""Findings from a window's rows: thresholds, thin figures shown but not judged, and one finding
per check (the more severe of two versions)."""

from __future__ import annotations

from kiln.config.monitor import MonitorConfig
from kiln.monitoring.findings import ALL, LatencyRow
from kiln.monitoring.judge import judge, latency_findings, worst_per_check


def test_levels_and_one_finding_per_check() -> None:
    assert [judge(v, 0.1, 0.25) for v in (None, 0.05, 0.1, 0.2, 0.25, 3.0)] == [
        "unjudged", "ok", "warn", "warn", "alert", "alert",
    ]  # fmt: skip
    cfg = MonitorConfig.model_validate(
        {"min_rows": 100, "latency": {"p99_ms": {"warn": 50, "alert": 80}}}
    )
    rows = [
        LatencyRow(3, ALL, 1000, 20, 0.02, 10.0, 40.0, 90.0),  # production: errors warn, p99 alert
        LatencyRow(4, ALL, 50, 25, 0.5, 10.0, 40.0, 300.0),  # a thin canary: shown, not judged
        LatencyRow(3, "EWR", 400, 20, 0.05, 10.0, 40.0, 95.0),  # segments are not judged here
    ]
    found = latency_findings(rows, cfg)
    assert {(f.check, f.version, f.level) for f in found} == {
        ("errors", 3, "warn"), ("latency:p99", 3, "alert"),
        ("errors", 4, "unjudged"), ("latency:p99", 4, "unjudged"),
    }  # fmt: skip
    worst = worst_per_check(found)
    assert [(f.check, f.version, f.level, f.threshold) for f in worst] == [
        ("latency:p99", 3, "alert", 80),
        ("errors", 3, "warn", 0.01),
    ]
