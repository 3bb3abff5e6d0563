"""Live performance of a 3-class version on real flights: captures written as the server writes
them (the class probabilities of each answer), the real delay class arriving later as labels;
the live logloss per origin equals scikit-learn's over the same rows."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import orjson
import pyarrow as pa
import pytest
from sklearn.metrics import log_loss

from kiln.config.monitor import MonitorConfig
from kiln.monitoring.findings import ALL
from kiln.monitoring.performance import unknown_labels, window_performance
from kiln.registry import Predictor
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import CaptureRecord, CaptureWriter, Stores
from kiln.stores.capture import open_window
from kiln.stores.labels import LabelStore

pytestmark = pytest.mark.slow

CLASS = (
    "CASE WHEN arr_delay <= 0 THEN 'early' WHEN arr_delay <= 30 THEN 'late' ELSE 'very_late' END"
)
MARCH = datetime(2013, 3, 1, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")


def test_live_logloss_of_a_three_class_version_per_origin(
    make_config, runner: Runner, stores: Stores, settings: Settings, warehouse: Path
) -> None:
    loaded = make_config(
        name="kiln.classes.yaml",
        data={"query": f"SELECT *, {CLASS} AS delay_class FROM flights WHERE month IN (1, 2)"
              " AND arr_delay IS NOT NULL"},
        target={"column": "delay_class", "task": "classification"},
        model={"estimator": "lightgbm.LGBMClassifier"},
        evaluation={"metrics": None},
    )  # fmt: skip
    result = runner.run(loaded)
    manifest = orjson.loads(stores.content.get(result.manifest_digest, what="manifest"))
    classes = manifest["classes"]
    predictor = Predictor.load(stores.content, result.manifest_digest, label="v1")
    features = loaded.config.features
    with duckdb.connect(str(warehouse), read_only=True) as con:
        march = con.sql(
            f"SELECT flight_id, time_hour, {CLASS} AS delay_class, {', '.join(features)}"
            " FROM flights WHERE month = 3 AND arr_delay IS NOT NULL ORDER BY flight_id LIMIT 600"
        ).to_arrow_table()
    rows = march.select(features).to_pylist()
    prediction = predictor.predict(rows)
    labels = prediction.labels()
    proba = prediction.probabilities
    by_class = [dict(zip(classes, p, strict=True)) for p in proba.tolist()]
    served = datetime.now(UTC)
    root = settings.artifact_root
    with CaptureWriter(root, writer_id="test") as writer:
        for i, (flight_id, hour) in enumerate(
            zip(march.column("flight_id").to_pylist(), march.column("time_hour").to_pylist(),
                strict=True)
        ):  # fmt: skip
            assert writer.offer(
                CaptureRecord(
                    request_id=str(flight_id), ts=served, pipeline="flights-test", version=1,
                    stage="production", segment=rows[i]["origin"], model=prediction.model[i],
                    fallback=bool(prediction.fallback[i]), features=rows[i],
                    prediction=float(proba[i].max()), error=None, latency_ms=1.0,
                    label=labels[i], probabilities=by_class[i],
                    event_ts=hour.replace(tzinfo=NEW_YORK),
                )
            )  # fmt: skip

    keys = [str(k) for k in march.column("flight_id").to_pylist()]
    truth = march.column("delay_class").to_pylist()
    store = LabelStore(root)
    labelled = 500  # the last 100 flights get no label yet
    store.add(
        "flights-test",
        pa.table({"key": [*keys[:labelled], "gone-1"], "label": [*truth[:labelled], "late"]}),
    )
    store.add("flights-test", pa.table({"key": [keys[0]], "label": ["no_such_class"]}))

    cfg = MonitorConfig.model_validate({"performance": {"min_labels": 50}})
    with open_window(root, "flights-test", start=MARCH, end=MARCH + timedelta(days=31)) as window:
        found, counts = window_performance(
            window, store, {1: manifest}, "classification", cfg, unknown=7
        )
    assert unknown_labels(root, store, "flights-test", cfg) == 1
    # the newest label of the first flight is no class: it counts as unlabelled
    assert (counts.labelled, counts.unlabelled, counts.unknown) == (labelled - 1, 101, 7)
    assert counts.duplicates == 0  # keys[0]'s first label is not among the scored ones

    groups: dict[str, list[int]] = defaultdict(list)
    for i in range(1, labelled):
        groups[rows[i]["origin"]].append(i)
        groups[ALL].append(i)
    got = {r.segment: r for r in found}
    assert set(got) == set(groups)
    for segment, index in groups.items():
        row = got[segment]
        expected = log_loss([truth[i] for i in index], proba[index], labels=classes)
        assert row.metric == "logloss"
        assert row.value == pytest.approx(expected, rel=1e-6)
        reference = (
            manifest["metrics"]["overall"]["logloss"]
            if segment == ALL
            else manifest["models"][segment]["metrics"]["logloss"]
        )
        assert row.change == pytest.approx((row.value - reference) / reference)
        assert row.labelled == len(index)
        assert row.requests == sum(1 for r in rows if segment == ALL or r["origin"] == segment)
