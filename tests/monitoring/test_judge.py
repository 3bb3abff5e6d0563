"""Findings from a window's rows: thresholds, thin figures shown but not judged, and one finding
per check (the more severe of two versions)."""

from __future__ import annotations

from kiln.config.monitor import MonitorConfig
from kiln.monitoring.findings import ALL, PREDICTION, FeatureDrift, LatencyRow
from kiln.monitoring.judge import (
    alert_findings,
    drift_findings,
    judge,
    latency_findings,
    worst_per_check,
)


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


def _drift(feature: str, segment: str, value: float | None) -> FeatureDrift:
    level = judge(value, 0.1, 0.25)
    return FeatureDrift(
        version=3, segment=segment, feature=feature, kind="numeric", statistic="psi",
        value=value, level=level, rows=500, rows_reference=5000, null_share=0.0,
        null_share_reference=0.0, warn=0.1, alert=0.25,
    )  # fmt: skip


def test_alert_episodes_cover_the_pipeline_a_feature_or_a_segment() -> None:
    """Every figure is judged; ``alert_by`` decides what one episode covers, so a season that
    moves every weather feature of every airport opens one episode, not forty."""
    rows = [
        _drift("temp", ALL, 0.9), _drift("temp", "JFK", 1.4), _drift("dewp", "EWR", 0.15),
        _drift("distance", ALL, 0.01), _drift("wind_gust", "LGA", None),
        _drift(PREDICTION, ALL, 0.3), _drift(PREDICTION, "JFK", 0.05),
    ]  # fmt: skip
    found = drift_findings(rows)
    fine = alert_findings(found, "segment")
    assert {f.check for f in fine} == {
        "drift:temp:__all__", "drift:temp:JFK", "drift:dewp:EWR", "drift:distance:__all__",
        "drift:wind_gust:LGA", "prediction:__all__", "prediction:JFK",
    }  # fmt: skip
    per_feature = {f.check: f for f in alert_findings(found, "feature")}
    assert {c: f.level for c, f in per_feature.items()} == {
        "drift:temp": "alert", "drift:dewp": "warn", "drift:distance": "ok",
        "drift:wind_gust": "unjudged", "prediction": "alert",
    }  # fmt: skip
    assert per_feature["drift:temp"].value == 1.4 and per_feature["drift:temp"].segment == "JFK"
    whole = {f.check: f for f in alert_findings(found, "pipeline")}
    assert set(whole) == {"drift", "prediction"}
    inputs = whole["drift"]
    assert (inputs.level, inputs.value, inputs.threshold) == ("alert", 1.4, 0.25)
    assert [(f["feature"], f["segment"]) for f in inputs.details["figures"]] == [
        ("temp", "JFK"),
        ("temp", ALL),
        ("dewp", "EWR"),
    ]
    assert inputs.message.startswith("3 of 5 drift figures over a threshold: temp @ JFK 1.4")
    calm = alert_findings(drift_findings([_drift("temp", ALL, 0.01)]), "pipeline")
    assert [(f.check, f.level) for f in calm] == [("drift", "ok")]  # resolves an open episode
