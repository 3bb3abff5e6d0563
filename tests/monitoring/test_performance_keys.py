"""How labels meet requests: by a key feature (typed or JSON, 123 or 123.0), only within
``monitor.labels.max_age``, and against the right holdout figure (own model, fallback routed,
unknown segment); a higher-is-better metric worsens when it falls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from kiln.config.monitor import MonitorConfig
from kiln.monitoring.findings import ALL
from kiln.monitoring.performance import unknown_labels, window_performance
from kiln.stores import CaptureRecord, CaptureWriter
from kiln.stores.capture import open_window
from kiln.stores.labels import LabelStore

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
TYPES = pa.struct([("booking", pa.int64()), ("origin", pa.string())])
MANIFEST = {
    "metrics": {"primary": "auc", "overall": {"auc": 0.8}},
    "models": {"JFK": {"metrics": {"auc": 0.75}}},
    "routed_to_fallback": {"LGA": {"fallback_metrics": {"auc": 0.7}}},
    "fallback": {"metrics": {"auc": 0.65}},
}


def test_labels_by_a_key_feature_within_max_age_against_the_right_reference(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(7)
    n = 600
    origins = np.array(["JFK", "LGA", "EWR"])[rng.integers(0, 3, n)]
    truth = rng.integers(0, 2, n).astype(float)
    proba = np.clip(0.5 * truth + 0.5 * rng.uniform(size=n), 0.0, 1.0)
    old = np.arange(n) % 10 == 0  # served 40 days before the labels: past max_age (30d)
    root = str(tmp_path)
    with CaptureWriter(root, writer_id="w") as writer:
        for i in range(n):
            features = {"booking": 1000 + i, "origin": str(origins[i])}
            assert writer.offer(
                CaptureRecord(
                    request_id=f"r{i}", ts=T0 - timedelta(days=40 if old[i] else 1),
                    event_ts=T0 - timedelta(days=41), pipeline="fares", version=4,
                    stage="production", segment=str(origins[i]), model=str(origins[i]),
                    fallback=False, features=features, prediction=float(proba[i]), error=None,
                    latency_ms=1.0, feature_types=TYPES if i % 2 else None,  # typed or JSON
                )
            )  # fmt: skip
    store = LabelStore(root)
    # a key as the label file wrote it: "1000" or "1000.0" both match booking 1000; 5 none
    keys = [f"{1000 + i}.0" if i % 3 else str(1000 + i) for i in range(n)]
    store.add("fares", pa.table({"key": [*keys, "5"], "label": [*truth, 1.0]}), received_at=T0)
    cfg = MonitorConfig.model_validate({"labels": {"key": "booking"}})
    start = T0 - timedelta(days=42)
    with open_window(root, "fares", start=start, end=T0) as window:
        rows, counts = window_performance(window, store, {4: MANIFEST}, "classification", cfg)
    assert unknown_labels(root, store, "fares", cfg) == 1
    joined = ~old
    assert (counts.labelled, counts.unlabelled) == (int(joined.sum()), int(old.sum()))

    got = {r.segment: r for r in rows}
    references = {ALL: 0.8, "JFK": 0.75, "LGA": 0.7, "EWR": 0.65}
    assert set(got) == set(references)
    for segment, reference in references.items():
        mask = joined & ((origins == segment) if segment != ALL else True)
        live = roc_auc_score(truth[mask], proba[mask])
        row = got[segment]
        assert row.value == pytest.approx(live)
        assert row.reference == reference
        assert row.change == pytest.approx((reference - live) / reference)  # higher is better
        assert row.requests == int(((origins == segment) if segment != ALL else np.ones(n)).sum())
        level = "alert" if row.change >= 0.1 else "warn" if row.change >= 0.05 else "ok"
        assert row.level == (level if row.labelled >= 100 else "unjudged")


def test_a_window_without_labels_or_traffic(tmp_path: Path) -> None:
    root = str(tmp_path)
    store = LabelStore(root)
    cfg = MonitorConfig()
    with open_window(root, "fares", start=T0, end=T0 + timedelta(days=1)) as window:
        rows, counts = window_performance(window, store, {}, "regression", cfg, unknown=3)
    assert rows == [] and counts.unknown == 3 and counts.labelled == 0
    with CaptureWriter(root, writer_id="w") as writer:
        writer.offer(
            CaptureRecord(
                request_id="r1", ts=T0, pipeline="fares", version=1, stage="production",
                segment="JFK", model="JFK", fallback=False, features={"x": 1}, prediction=2.0,
                error=None, latency_ms=1.0,
            )
        )  # fmt: skip
    with open_window(root, "fares", start=T0, end=T0 + timedelta(days=1)) as window:
        rows, counts = window_performance(window, store, {}, "regression", cfg)
    assert [(r.segment, r.requests, r.labelled, r.value, r.level) for r in rows] == [
        (ALL, 1, 0, None, "unjudged"),
        ("JFK", 1, 0, None, "unjudged"),
    ]
    assert (counts.labelled, counts.unlabelled) == (0, 1)


def test_a_corrupt_label_file_is_skipped_and_named_with_the_window(tmp_path: Path) -> None:
    root = str(tmp_path)
    with CaptureWriter(root, writer_id="w") as writer:
        for i in range(4):
            writer.offer(
                CaptureRecord(
                    request_id=f"r{i}", ts=T0, pipeline="fares", version=1, stage="production",
                    segment="JFK", model="JFK", fallback=False, features={"x": i},
                    prediction=float(i), error=None, latency_ms=1.0,
                )
            )  # fmt: skip
    store = LabelStore(root)
    labels = pa.table({"key": ["r0", "r1", "r2"], "label": [1.0, 1.0, 4.0]})
    store.add("fares", labels, received_at=T0 + timedelta(hours=1))
    bad = tmp_path / "labels" / "pipeline=fares" / "9999999999999-bad.parquet"
    bad.write_bytes(b"PAR1 not a parquet file")
    assert store.read("fares").num_rows == 3
    assert list(store.readable("fares")[1]) == [str(bad)]
    with open_window(root, "fares", start=T0, end=T0 + timedelta(days=1)) as window:
        rows, counts = window_performance(window, store, {}, "regression", MonitorConfig())
        assert list(window.skipped) == [str(bad)]
    assert counts.labelled == 3 and counts.unlabelled == 1
    assert rows[0].segment == ALL and rows[0].value == pytest.approx((1 + 0 + 2) / 3)
    assert unknown_labels(root, store, "fares", MonitorConfig()) == 0
