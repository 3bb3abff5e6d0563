"""The training reference a run writes into the manifest, checked against DuckDB's own counts
over the same real flights."""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pytest

from kiln.runs import Runner
from kiln.stores import Stores

pytestmark = pytest.mark.slow

# LGA keeps two days of flights: too few rows for a model, so the fallback serves it.
QUERY = "SELECT * FROM flights WHERE month IN (1, 2) AND (origin <> 'LGA' OR day <= 2)"
TRAIN = "time_hour < TIMESTAMP '2013-02-15' AND arr_delay IS NOT NULL"
DECILES = [k / 10 for k in range(1, 10)]


def manifest_of(stores: Stores, digest: str) -> dict:
    return orjson.loads(stores.content.get(digest, what="manifest"))


def sql(warehouse: Path, query: str, *params: object) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(query, list(params)).fetchall()


def test_a_run_records_each_segments_training_histograms(
    make_config, runner: Runner, stores: Stores, warehouse: Path
) -> None:
    loaded = make_config(data={"query": QUERY}, segments={"min_rows": 1000})
    result = runner.run(loaded)
    m = manifest_of(stores, result.manifest_digest)
    assert set(m["models"]) == {"EWR", "JFK"} and set(m["routed_to_fallback"]) == {"LGA"}
    ref = m["reference"]
    assert (ref["format"], ref["bins"], ref["top_categories"]) == (1, 10, 20)
    segs = ref["segments"]
    assert set(segs) == {"__all__", "EWR", "JFK", "LGA"}
    assert segs["__all__"]["rows"] == m["lineage"]["rows"]["train"]
    assert sum(segs[k]["rows"] for k in ("EWR", "JFK", "LGA")) == segs["__all__"]["rows"]

    for origin in ("EWR", "LGA"):
        where = f"({QUERY.split('WHERE ')[1]}) AND {TRAIN} AND origin = ?"
        ((rows, nulls, lo, hi, deciles),) = sql(
            warehouse,
            "SELECT count(*), count(*) - count(temp), min(temp), max(temp),"
            f" quantile_cont(temp, {DECILES}) FROM flights WHERE {where}",
            origin,
        )
        temp = segs[origin]["features"]["temp"]
        assert segs[origin]["rows"] == rows
        assert (temp["nulls"], temp["min"], temp["max"]) == (nulls, lo, hi)
        own = sorted({d for d in deciles if d > lo})  # its own deciles, not the overall ones
        assert temp["edges"] == pytest.approx(own, rel=1e-9)
        bounds = [-np.inf, *temp["edges"], np.inf]
        counts = [
            sql(warehouse, f"SELECT count(temp) FROM flights WHERE {where}"
                " AND temp >= ? AND temp < ?", origin, a, b)[0][0]
            for a, b in itertools.pairwise(bounds)
        ]  # fmt: skip
        assert temp["counts"] == counts

        carrier = segs[origin]["features"]["carrier"]
        by_count = sql(
            warehouse,
            f"SELECT carrier, count(*) AS n FROM flights WHERE {where}"
            " GROUP BY carrier ORDER BY n DESC, carrier",
            origin,
        )
        assert carrier["kind"] == "categorical" and carrier["nulls"] == 0
        assert carrier["categories"] == [c for c, _ in by_count][:20]
        assert carrier["counts"][:-1] == [n for _, n in by_count][:20]
        assert sum(carrier["counts"]) == rows

    hold = m["lineage"]["rows"]["holdout"]
    assert sum(segs["__all__"]["prediction"]["counts"]) == hold
    assert segs["__all__"]["metric"] == {
        "name": "mae", "value": pytest.approx(m["metrics"]["overall"]["mae"]), "rows": hold,
    }  # fmt: skip
    ewr = m["models"]["EWR"]
    assert segs["EWR"]["metric"]["value"] == pytest.approx(ewr["metrics"]["mae"])
    assert segs["EWR"]["metric"]["rows"] == ewr["rows_holdout"]
    lga = m["routed_to_fallback"]["LGA"]  # what serves LGA: the fallback
    assert segs["LGA"]["metric"]["value"] == pytest.approx(lga["fallback_metrics"]["mae"])
    assert sum(segs["LGA"]["prediction"]["counts"]) == lga["rows_holdout"]


def test_with_refit_the_reference_is_every_row_and_multiclass_predictions_are_the_top_class(
    make_config, runner: Runner, stores: Stores
) -> None:
    query = (
        "SELECT *, CASE WHEN arr_delay <= 0 THEN 'early' WHEN arr_delay <= 30 THEN 'late'"
        " ELSE 'very_late' END AS delay_class FROM flights WHERE month IN (1, 2)"
        " AND arr_delay IS NOT NULL"
    )
    loaded = make_config(
        data={"query": query},
        target={"column": "delay_class", "task": "classification"},
        model={"estimator": "lightgbm.LGBMClassifier"},
        evaluation={"metrics": None, "refit": True},
    )
    m = manifest_of(stores, runner.run(loaded).manifest_digest)
    segs = m["reference"]["segments"]
    assert segs["__all__"]["rows"] == m["lineage"]["rows"]["used"]  # refit: every row
    pred = segs["__all__"]["prediction"]
    assert pred["edges"][0] > 1 / 3 and pred["edges"][-1] <= 1  # a top class's probability
    assert sum(pred["counts"]) == m["lineage"]["rows"]["holdout"]
    assert segs["__all__"]["metric"]["name"] == "logloss"
    assert segs["__all__"]["metric"]["value"] == pytest.approx(m["metrics"]["overall"]["logloss"])
