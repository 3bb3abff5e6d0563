"""Live performance: the primary metric on the window's labelled requests, per version and segment.

Labels arrive later (``kiln labels add``, :class:`~kiln.stores.labels.LabelStore`). A window's
answered requests (status 200, production and canary) are joined in DuckDB with the newest label
of their key: the request id (``X-Request-ID``; a batch row's id is ``<request id>:<index>``), or
the value of the feature ``monitor.labels.key``. A label joins a request served at most
``monitor.labels.max_age`` before the label arrived. Each request counts for the version that
answered it (the capture's ``version``), so a label that arrives after a promotion still judges
the version that made the prediction.

Per version, per segment and overall (segment :data:`ALL`), the live metric is scored with
:func:`kiln.pipeline.metrics.score` on the joined Arrow columns (one vectorized call per group)
and compared with what the version measured on its holdout: a segment model's own holdout
metric, the fallback's on that segment when the segment is served by the fallback, the routed
overall metric for :data:`ALL`. ``change`` is the relative worsening; fewer than
``monitor.performance.min_labels`` labelled requests leave a figure shown but ``unjudged``.

Labels whose key matches no capture at all (:func:`unknown_labels`) are counted once per monitor
pass, over all of the pipeline's captures: a label for a request of yesterday is not unknown
because today's window lacks it. The pass passes that count to each window's
:class:`LabelCounts` (``unknown=``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kiln.config.monitor import MonitorConfig
from kiln.monitoring.findings import ALL, LabelCounts, Level, PerformanceRow
from kiln.pipeline.metrics import HIGHER_IS_BETTER, score
from kiln.stores.capture import CaptureWindow, open_window
from kiln.stores.labels import LabelStore

__all__ = ["reference_metric", "unknown_labels", "window_performance"]

logger = logging.getLogger("kiln.monitoring")

REQUEST_ID = "request_id"
_ALL_TIME = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


def window_performance(
    window: CaptureWindow,
    labels: LabelStore,
    manifests: Mapping[int, dict[str, Any]],
    task: str,
    cfg: MonitorConfig,
    *,
    classes: Sequence[str] | None = None,
    unknown: int = 0,
) -> tuple[list[PerformanceRow], LabelCounts]:
    """The live primary metric of each (version, segment) and version of ``window``.

    ``manifests`` maps each version to its package manifest (its primary metric, holdout
    metrics and ``classes``); a version without one is shown with no reference (unjudged).
    ``classes`` is used for versions whose manifest names none. ``unknown`` is the pass's count
    of labels matching no capture (:func:`unknown_labels`), carried into the counts. A corrupt
    label file is left out and added to ``window.skipped`` with its error.
    """
    if window.empty:
        return [], LabelCounts(unknown=unknown)
    files, corrupt = labels.readable(window.pipeline)
    window.skipped.update(corrupt)  # named with the window's corrupt capture files
    key = _key_sql(window, cfg.labels.key)
    answered = (
        f"SELECT request_id, version, segment, prediction, probabilities, ts, {key} AS k"
        " FROM captures"
        " WHERE stage IN ('production', 'canary') AND coalesce(status, 200) = 200"
        " AND prediction IS NOT NULL"
    )
    totals = window.query(
        f"SELECT version, segment, count(*) AS requests FROM ({answered}) GROUP BY ALL ORDER BY ALL"
    )
    if not files:
        joined = None
    else:
        joined = window.query(
            f"WITH a AS ({answered}), l AS ({labels.latest_sql('label_files')})"
            " SELECT a.version, a.segment, a.prediction, a.probabilities,"
            " CAST(l.label AS VARCHAR) AS label_text, TRY_CAST(l.label AS DOUBLE) AS label_num,"
            f" l.sent FROM a JOIN l ON {_same_key('a.k', 'l.key', cfg.labels.key)}"
            " AND a.ts >= l.received_at - to_seconds($max_age)"
            " ORDER BY a.version, a.segment, a.request_id, a.ts",  # the same sums every time
            {"label_files": files, "max_age": cfg.labels.max_age.total_seconds()},
        )
    return _score(totals, joined, manifests, task, cfg=cfg, classes=classes, unknown=unknown)


def unknown_labels(root_url: str, labels: LabelStore, pipeline: str, cfg: MonitorConfig) -> int:
    """How many of ``pipeline``'s labelled keys match no capture of any stage and date.

    Counted once per monitor pass over every capture file (a DuckDB anti-join), not per window:
    a label is unknown only when no request ever carried its key here (the request may have been
    captured by another server's store, which is why such labels are kept).
    """
    files, _ = labels.readable(pipeline)
    if not files:
        return 0
    start, end = _ALL_TIME
    with open_window(
        root_url, pipeline, start=start, end=end, stages=("production", "canary", "shadow")
    ) as everything:
        if everything.empty:  # no capture at all: every labelled key is unknown
            with labels.connect() as con:
                rows = con.sql(
                    f"SELECT count(*) FROM ({labels.keys_sql('label_files')})",
                    params={"label_files": files},
                ).fetchall()
            return int(rows[0][0])
        key = _key_sql(everything, cfg.labels.key)
        found = everything.query(
            f"SELECT count(*) AS n FROM ({labels.keys_sql('label_files')}) l"
            f" ANTI JOIN (SELECT DISTINCT {key} AS k FROM captures) c"
            f" ON {_same_key('c.k', 'l.key', cfg.labels.key)}",
            {"label_files": files},
        )
    return int(found.column("n")[0].as_py())


def reference_metric(manifest: Mapping[str, Any], segment: str) -> float | None:
    """The version's holdout value of its primary metric for ``segment`` (or :data:`ALL`)."""
    metrics = manifest.get("metrics") or {}
    primary = metrics.get("primary")
    if primary is None:
        return None
    if segment == ALL:
        return _number((metrics.get("overall") or {}).get(primary))
    own = (manifest.get("models") or {}).get(segment)
    if own is not None:
        return _number((own.get("metrics") or {}).get(primary))
    routed = (manifest.get("routed_to_fallback") or {}).get(segment)
    if routed is not None:
        return _number((routed.get("fallback_metrics") or {}).get(primary))
    return _number(((manifest.get("fallback") or {}).get("metrics") or {}).get(primary))


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _key_sql(window: CaptureWindow, key: str) -> str:
    """The request's key: its id, or the key feature's value as text (see :func:`_same_key`)."""
    if key == REQUEST_ID:
        return REQUEST_ID
    return window.feature_sql(key, numeric=False)


def _same_key(capture_key: str, label_key: str, key: str) -> str:
    """SQL: the capture's key equals the label's. A key feature's number is compared as DuckDB
    prints it as a DOUBLE on both sides, so that a label file's 123 matches a request's 123.0."""
    if key == REQUEST_ID:
        return f"{capture_key} = {label_key}"

    def text(expr: str) -> str:
        return f"COALESCE(CAST(TRY_CAST({expr} AS DOUBLE) AS VARCHAR), {expr})"

    return f"{text(capture_key)} = {text(label_key)}"


def _score(
    totals: pa.Table,
    joined: pa.Table | None,
    manifests: Mapping[int, dict[str, Any]],
    task: str,
    *,
    cfg: MonitorConfig,
    classes: Sequence[str] | None,
    unknown: int,
) -> tuple[list[PerformanceRow], LabelCounts]:
    requests: dict[tuple[int, str], int] = {}
    for version, segment, n in zip(
        totals.column("version").to_pylist(),
        totals.column("segment").to_pylist(),
        totals.column("requests").to_pylist(),
        strict=True,
    ):
        requests[(version, segment)] = requests.get((version, segment), 0) + n
        requests[(version, ALL)] = requests.get((version, ALL), 0) + n
    by_version = _split(joined, "version") if joined is not None else {}
    rows: list[PerformanceRow] = []
    labelled_total = duplicates = unusable = 0
    for version in sorted({v for v, _ in requests}):
        manifest = manifests.get(version) or {}
        primary = (manifest.get("metrics") or {}).get("primary") or _default_metric(task)
        part = by_version.get(version)
        y, p, segments, sent, bad = _arrays(part, task, manifest.get("classes") or classes)
        unusable += bad
        labelled_total += len(y)
        duplicates += int(np.sum(sent - 1)) if len(sent) else 0
        spans = _spans(segments)  # the rows are sorted by segment: one slice each
        names = sorted(s for (v, s) in requests if v == version and s not in (ALL, None))
        groups = [(ALL, slice(None)), *((s, spans.get(s, slice(0, 0))) for s in names)]
        for segment, span in groups:
            n = len(y[span])
            value = score([primary], y[span], p[span])[primary] if n else None
            reference = reference_metric(manifest, segment) if manifest else None
            change, level = _judge(primary, value, reference, n, cfg)
            rows.append(
                PerformanceRow(
                    version=version, segment=segment, metric=primary, value=value,
                    reference=reference, change=change, level=level, labelled=n,
                    requests=requests.get((version, segment), 0),
                )
            )  # fmt: skip
    if unusable:
        logger.warning(
            "%d labels of the window cannot be scored (not a number, or not one of the"
            " version's classes); they count as unlabelled",
            unusable,
        )
    answered = sum(n for (v, s), n in requests.items() if s == ALL)
    counts = LabelCounts(
        labelled=labelled_total,
        unlabelled=answered - labelled_total,
        unknown=unknown,
        duplicates=duplicates,
    )
    return rows, counts


def _default_metric(task: str) -> str:
    return "mae" if task == "regression" else "logloss"


def _split(table: pa.Table, column: str) -> dict[int, pa.Table]:
    """The table's rows per value of ``column`` (it is sorted by it)."""
    spans = _spans(table.column(column).to_numpy())
    return {int(v): table.slice(s.start, s.stop - s.start) for v, s in spans.items()}


def _spans(values: np.ndarray) -> dict[Any, slice]:
    """The slice of each value of sorted ``values`` (a vectorized pass, not a loop per row)."""
    if len(values) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    return {values[s]: slice(int(s), int(e)) for s, e in zip(starts, ends, strict=True)}


def _arrays(
    part: pa.Table | None, task: str, classes: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Truth, prediction, segment and label count of the scorable rows of one version, and how
    many labelled rows could not be scored."""
    if part is None or part.num_rows == 0:
        empty = np.empty(0)
        return empty, empty, np.empty(0, dtype=object), np.empty(0, dtype=np.int64), 0
    if task == "regression" or not classes:
        y = part.column("label_num")
        if task != "regression":  # a binary target: 0 or 1
            y = pc.if_else(pc.is_in(y, pa.array([0.0, 1.0])), y, pa.scalar(None, pa.float64()))
        p: Any = part.column("prediction")
        truth = y
    else:
        truth = _class_index(part, list(classes))
        if len(classes) > 2:
            probabilities = part.column("probabilities")
            columns = [pc.fill_null(pc.map_lookup(probabilities, c, "first"), 0.0) for c in classes]
            p = np.column_stack([c.to_numpy() for c in columns])
        else:
            p = part.column("prediction")
    ok = pc.is_valid(truth)
    if not isinstance(p, np.ndarray):
        ok = pc.and_(ok, pc.is_valid(p))
    mask = np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)
    y_np = np.asarray(pc.fill_null(truth, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
    if isinstance(p, np.ndarray):
        p_np = p
    else:
        p_np = np.asarray(pc.fill_null(p, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
    segments = np.asarray(part.column("segment").to_numpy(zero_copy_only=False), dtype=object)
    sent = np.asarray(part.column("sent").to_numpy(zero_copy_only=False), dtype=np.int64)
    bad = int(len(mask) - mask.sum())
    return y_np[mask], p_np[mask], segments[mask], sent[mask], bad


def _class_index(part: pa.Table, classes: list[str]) -> pa.ChunkedArray:
    """Each label's index in ``classes``: its text, or a whole number's without ``.0`` (3, as
    a version names the class, for a label sent as 3.0); null when it is no class."""
    value_set = pa.array(classes, pa.string())
    by_text = pc.index_in(part.column("label_text"), value_set=value_set)
    num = part.column("label_num")
    whole = pc.if_else(pc.equal(num, pc.floor(num)), num, pa.scalar(None, pa.float64()))
    as_int = pc.cast(pc.cast(whole, pa.int64(), safe=False), pa.string())
    by_number = pc.index_in(as_int, value_set=value_set)
    return pc.cast(pc.coalesce(by_text, by_number), pa.float64())


def _judge(
    metric: str, value: float | None, reference: float | None, labelled: int, cfg: MonitorConfig
) -> tuple[float | None, Level]:
    """The relative worsening against the holdout, and its level."""
    change: float | None = None
    if value is not None and reference is not None and reference != 0:
        worse = reference - value if HIGHER_IS_BETTER.get(metric, False) else value - reference
        change = worse / abs(reference)
    if change is None or labelled < cfg.performance.min_labels:
        return change, "unjudged"
    if change >= cfg.performance.alert:
        return change, "alert"
    if change >= cfg.performance.warn:
        return change, "warn"
    return change, "ok"
