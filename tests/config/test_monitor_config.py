"""kiln.yaml `monitor:`: defaults for every pipeline, errors with file:line, never in the digest."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from kiln.config import load_config
from tests.config.test_loader import GOOD, problems, write


def test_a_pipeline_without_monitor_is_monitored_with_defaults(tmp_path: Path) -> None:
    monitor = load_config(write(tmp_path, GOOD)).config.monitor
    assert monitor.enabled and monitor.window == timedelta(days=1)
    stat, bands = monitor.drift.thresholds("distance", "numeric")
    assert (stat, bands.warn, bands.alert) == ("psi", 0.1, 0.25)
    assert [c.type for c in monitor.channels] == ["log"]
    assert monitor.retrain.on == []


def test_monitor_settings_never_change_the_digest(tmp_path: Path) -> None:
    plain = load_config(write(tmp_path, GOOD)).config.digest
    tuned = GOOD + "monitor: {window: 1h, consecutive: 3, drift: {numeric: ks}}\n"
    assert load_config(write(tmp_path, tuned)).config.digest == plain


def test_on_is_a_key_not_a_boolean(tmp_path: Path) -> None:
    """YAML 1.1 reads a bare `on` as true; a kiln.yaml key is always its own text."""
    text = GOOD + "monitor:\n  retrain: {on: [drift, performance], cooldown: 12h}\n"
    retrain = load_config(write(tmp_path, text)).config.monitor.retrain
    assert retrain.on == ["drift", "performance"] and retrain.cooldown == timedelta(hours=12)


def test_per_feature_statistic_and_thresholds(tmp_path: Path) -> None:
    text = GOOD + (
        "monitor:\n  drift:\n    numeric: wasserstein\n    alert: 0.5\n"
        "    features: {carrier: {statistic: jensen_shannon}, distance: {warn: 0.2}}\n"
    )
    drift = load_config(write(tmp_path, text)).config.monitor.drift
    stat, bands = drift.thresholds("distance", "numeric")
    assert (stat, bands.warn, bands.alert) == ("wasserstein", 0.2, 0.5)
    stat, bands = drift.thresholds("carrier", "categorical")
    assert (stat, bands.warn, bands.alert) == ("jensen_shannon", 0.1, 0.2)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("monitor: {windw: 1d}\n", ["kiln.yaml:17:11", "monitor.windw", "did you mean 'window'"]),
        ("monitor: {window: 7m}\n", ["monitor.window", "does not divide a day"]),
        ("monitor: {drift: {numeric: chi2}}\n", ["monitor.drift.numeric", "psi"]),
        ("monitor: {drift: {categorical: wasserstein}}\n", ["ordered values", "jensen_shannon"]),
        ("monitor: {drift: {features: {tmp: {alert: 1}}}}\n", ["'tmp'", "not features"]),
        ("monitor: {labels: {key: flight_id}}\n", ["monitor.labels.key", "request_id"]),
        ("monitor: {performance: {warn: 0.3, alert: 0.1}}\n", ["warn (0.3)", "alert (0.1)"]),
        ("monitor: {channels: [{type: webhook}]}\n", ["url"]),
        ("monitor: {channels: [{type: pager}]}\n", ["monitor.channels", "webhook"]),
    ],
)
def test_bad_monitor_sections_name_the_place_and_the_fix(
    tmp_path: Path, section: str, expected: list[str]
) -> None:
    found = " ".join(problems(tmp_path, GOOD + section))
    for text in expected:
        assert text in found, found
