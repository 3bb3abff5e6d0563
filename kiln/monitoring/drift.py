"""Drift of one window of captured traffic against each version's training reference.

One DuckDB query aggregates the whole window (never a row in Python): each numeric feature and
the prediction is binned with the reference edges of the request's (version, segment) and of its
version overall, joined from a small relation of edge lists passed as a parameter; each
categorical value is counted with whether the server saw it as unseen; rows are counted per
segment. ``GROUPING SETS`` return every count in one scan. The statistics (PSI by default) are
then computed on those few hundred counts by :mod:`kiln.pipeline.drift`.

A version's numeric edges are sent as ``[min, edge..., next(max)]`` padded with +inf, so that a
value's bin is the number of them at or below it: 0 is below the training minimum, the last
real one above its maximum (both counted as outside the range, and in the reference's outer
bins for the statistic), and a null value stays null.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.config.monitor import MonitorConfig
from kiln.errors import ConfigError
from kiln.monitoring.findings import ALL, PREDICTION, DriftReport, FeatureDrift, Level
from kiln.monitoring.findings import SegmentTraffic as Traffic
from kiln.monitoring.live import NOT_THE_VERSION
from kiln.pipeline.drift import bin_representatives, statistic
from kiln.stores.capture import CaptureWindow

__all__ = ["UNSEEN_SHOWN", "no_reference_note", "window_drift"]

UNSEEN_SHOWN = 10
"""Unseen categories listed per feature and segment (the most frequent)."""
_FORMAT = 1
_PER_QUERY = 30
"""Figures per query: two grouping columns each, and DuckDB's GROUPING() takes at most 64."""
_SERVED = (
    "COALESCE(status, TRY_CAST(left(error, 3) AS INTEGER), 200)"
    f" NOT IN ({', '.join(map(str, NOT_THE_VERSION))})"
)
"""The requests of the version: not those refused before any version saw them (400, 413, 415;
in files written before ``status``, the error text's leading status)."""


def no_reference_note(version: int) -> str:
    return f"version {version} has no training reference: re-run the pipeline to record one"


@dataclass(frozen=True)
class _Window:
    """What the window holds for one figure of one (version, segment)."""

    counts: np.ndarray
    """Per bin of the reference (categorical: per kept category, then other)."""
    nulls: int
    at: np.ndarray | None = None
    """Numeric: the bins' representatives (None: the reference has no range)."""
    outside: float | None = None
    unseen: dict[str, int] | None = None


@dataclass(frozen=True)
class _Figure:
    """One feature (or the prediction) of one (version, segment) and its reference entry."""

    version: int
    segment: str
    name: str
    rows: int
    """The window's requests of the segment."""
    rows_reference: int
    entry: Mapping[str, Any]


@dataclass(frozen=True)
class _Column:
    """One figure binned in the query: a numeric feature, or the prediction."""

    name: str
    alias: str
    sql: str
    width: int
    """Length of its padded edge lists."""


def _bounds(entry: Mapping[str, Any]) -> list[float]:
    """``[min, edges..., next(max)]``: what a value is compared with (empty: no range)."""
    lo, hi = entry.get("min"), entry.get("max")
    if lo is None or hi is None:
        return []
    return [float(lo), *map(float, entry["edges"]), math.nextafter(float(hi), math.inf)]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _usable(reference: Mapping[str, Any] | None) -> bool:
    return (
        isinstance(reference, Mapping)
        and reference.get("format") == _FORMAT
        and ALL in (reference.get("segments") or {})
    )


def window_drift(
    window: CaptureWindow, references: Mapping[int, Mapping[str, Any] | None], cfg: MonitorConfig
) -> DriftReport:
    """Per version, segment (and overall) and feature: the drift statistic of the window against
    the version's reference, null shares, the share outside the training range, the unseen
    categories, the prediction's drift, and each segment's share of traffic against training.

    ``references``: each version's ``manifest["reference"]`` (None or absent: the version is
    listed in ``no_reference``)."""
    if window.empty:
        return DriftReport()
    counts = window.query(f"SELECT version, count(*) AS n FROM captures WHERE {_SERVED} GROUP BY 1")
    versions = sorted(int(v) for v in counts.column("version").to_pylist())
    usable: dict[int, Mapping[str, Any]] = {}
    for v in versions:
        ref = references.get(v)
        if ref is not None and _usable(ref):
            usable[v] = ref
    missing = [v for v in versions if v not in usable]
    if not usable:
        return DriftReport(no_reference=missing)
    query = _Query.of(window, usable, cfg)
    report = _Assembly(query, usable, cfg)
    for part in query.parts():  # GROUPING() takes at most 64 columns
        sql, params = part.sql(), {"ref": part.edge_rows()}
        report.absorb(part, window.query(sql, params=params).to_pylist())
    return DriftReport(features=report.features(), traffic=report.traffic(), no_reference=missing)


@dataclass(frozen=True)
class _Query:
    references: Mapping[int, Mapping[str, Any]]
    numeric: list[_Column]
    text: list[tuple[str, str, str]]
    """(name, alias, value SQL) of each categorical feature."""

    @classmethod
    def of(
        cls, window: CaptureWindow, references: Mapping[int, Mapping[str, Any]], cfg: MonitorConfig
    ) -> _Query:
        kinds: dict[str, str] = {}
        width: dict[str, int] = defaultdict(int)
        for ref in references.values():
            for seg in ref["segments"].values():
                for name, entry in seg["features"].items():
                    kinds.setdefault(name, entry["kind"])
                    if entry["kind"] == "numeric":
                        width[name] = max(width[name], len(_bounds(entry)))
                if cfg.drift.prediction and "prediction" in seg:
                    width[PREDICTION] = max(width[PREDICTION], len(_bounds(seg["prediction"])))
        numeric = [
            _Column(name, f"n{i}", window.feature_sql(name, numeric=True), max(width[name], 1))
            for i, name in enumerate(n for n, k in kinds.items() if k == "numeric")
        ]
        if PREDICTION in width:
            numeric.append(_Column(PREDICTION, "pred", "prediction", max(width[PREDICTION], 1)))
        text = [
            (name, f"c{j}", window.feature_sql(name, numeric=False))
            for j, name in enumerate(n for n, k in kinds.items() if k == "categorical")
        ]
        for name, _, _ in text:
            stat, _ = cfg.drift.thresholds(name, "categorical")
            if stat == "wasserstein":
                raise ConfigError(
                    f"monitor.drift: feature {name!r} is categorical and wasserstein needs numbers",
                    hint="use psi, jensen_shannon or ks for categorical features"
                    " (monitor.drift.categorical or monitor.drift.features)",
                )
        return cls(references, numeric, text)

    def parts(self, size: int = _PER_QUERY) -> list[_Query]:
        """The figures in queries of at most ``size`` each."""
        figures: list[_Column | tuple[str, str, str]] = [*self.numeric, *self.text]
        out = []
        for i in range(0, max(len(figures), 1), size):
            chunk = figures[i : i + size]
            numeric = [c for c in chunk if isinstance(c, _Column)]
            text = [c for c in chunk if not isinstance(c, _Column)]
            out.append(_Query(self.references, numeric, text))
        return out

    def edge_rows(self) -> list[dict[str, Any]]:
        """One row per (version, segment) of the references: each column's padded bounds."""
        out = []
        for version, ref in self.references.items():
            for segment, seg in ref["segments"].items():
                row: dict[str, Any] = {"version": version, "segment": segment}
                for col in self.numeric:
                    entry = seg.get("prediction") if col.name == PREDICTION else None
                    entry = entry or seg["features"].get(col.name) or {}
                    bounds = _bounds(entry) if entry.get("kind", "numeric") == "numeric" else []
                    row[col.alias] = bounds + [math.inf] * (col.width - len(bounds))
                out.append(row)
        return out

    def sql(self) -> str:
        def binned(col: _Column, side: str) -> str:
            terms = " + ".join(
                f"({col.alias}_v >= {side}.{col.alias}[{k}])::INTEGER"
                for k in range(1, col.width + 1)
            )
            return f"{terms} AS {side}_{col.alias}"

        values = [f"{c.sql} AS {c.alias}_v" for c in self.numeric]
        values += [f"{sql} AS {alias}" for _, alias, sql in self.text]
        values += [f"list_contains(unseen, {_literal(name)}) AS {alias}_u"
                   for name, alias, _ in self.text]  # fmt: skip
        bins = [binned(c, side) for c in self.numeric for side in ("s", "a")]
        cats = [f"r.{alias}, r.{alias}_u" for _, alias, _ in self.text]
        sets = ["(version, segment)", "(version)"]
        for c in self.numeric:
            sets += [f"(version, segment, s_{c.alias})", f"(version, a_{c.alias})"]
        for _, alias, _ in self.text:
            sets += [f"(version, segment, {alias}, {alias}_u)", f"(version, {alias}, {alias}_u)"]
        grouped = ", ".join(self.grouping_columns())
        return (
            f"WITH ref AS (SELECT unnest($ref, recursive := true)),"
            f" r AS (SELECT version, segment, {', '.join(values)} FROM captures"
            f" WHERE {_SERVED} AND version IN ({', '.join(map(str, self.references))})),"
            f" b AS (SELECT r.version, r.segment, {', '.join([*bins, *cats])} FROM r"
            f" LEFT JOIN ref s ON s.version = r.version AND s.segment = r.segment"
            f" LEFT JOIN ref a ON a.version = r.version AND a.segment = '{ALL}')"
            f" SELECT *, count(*) AS n, GROUPING({grouped}) AS g FROM b"
            f" GROUP BY GROUPING SETS ({', '.join(sets)})"
        )

    def grouping_columns(self) -> list[str]:
        cols = ["segment"]
        for c in self.numeric:
            cols += [f"s_{c.alias}", f"a_{c.alias}"]
        for _, alias, _ in self.text:
            cols += [alias, f"{alias}_u"]
        return cols

    def mask(self, *grouped: str) -> int:
        """The ``GROUPING(...)`` value of the set grouped by ``grouped`` (and version)."""
        cols = self.grouping_columns()
        return sum(1 << (len(cols) - 1 - i) for i, c in enumerate(cols) if c not in grouped)


class _Assembly:
    """The query's counts, gathered per (version, segment) and turned into rows."""

    def __init__(
        self, query: _Query, references: Mapping[int, Mapping[str, Any]], cfg: MonitorConfig
    ) -> None:
        self.references, self.cfg = references, cfg
        self.aliases = {c.name: c.alias for c in query.numeric}
        self.aliases |= {name: alias for name, alias, _ in query.text}
        self.rows: dict[tuple[int, str], int] = {}
        self.bins: dict[tuple[int, str, str], dict[int | None, int]] = defaultdict(dict)
        self.values: dict[tuple[int, str, str], list[tuple[str | None, bool, int]]] = defaultdict(
            list
        )

    def absorb(self, query: _Query, rows: list[dict[str, Any]]) -> None:
        """The rows of one query: what each grouping set counted."""
        sets: dict[int, tuple[str, str, str | None]] = {
            query.mask("segment"): ("rows", "", "segment"),
            query.mask(): ("rows", "", None),
        }
        for c in query.numeric:
            sets[query.mask("segment", f"s_{c.alias}")] = ("bins", c.name, "segment")
            sets[query.mask(f"a_{c.alias}")] = ("bins", c.name, None)
        for name, alias, _ in query.text:
            sets[query.mask("segment", alias, f"{alias}_u")] = ("values", name, "segment")
            sets[query.mask(alias, f"{alias}_u")] = ("values", name, None)
        for row in rows:
            self._add(row, sets[row["g"]])

    def _add(self, row: Mapping[str, Any], grouped: tuple[str, str, str | None]) -> None:
        what, name, by = grouped
        segment = ALL if by is None else row["segment"]
        if segment is None:
            return  # requests without a segment value count overall only
        key = (int(row["version"]), str(segment))
        if what == "rows":
            self.rows[key] = row["n"]
        elif what == "bins":
            side = "s" if by else "a"
            self.bins[(*key, name)][row[f"{side}_{self.aliases[name]}"]] = row["n"]
        else:
            alias = self.aliases[name]
            self.values[(*key, name)].append((row[alias], bool(row[f"{alias}_u"]), row["n"]))

    def traffic(self) -> list[Traffic]:
        out = []
        for version, ref in self.references.items():
            total = self.rows.get((version, ALL), 0)
            trained = ref["segments"][ALL]["rows"] or 1
            names = {s for v, s in self.rows if v == version} | set(ref["segments"])
            for seg in sorted(names - {ALL}):
                n = self.rows.get((version, seg), 0)
                share_ref = ref["segments"].get(seg, {}).get("rows", 0) / trained
                out.append(Traffic(version, seg, n, n / total if total else 0.0, share_ref))
        return out

    def features(self) -> list[FeatureDrift]:
        out = []
        for (version, seg), n in sorted(self.rows.items()):
            reference = self.references[version]["segments"].get(seg)
            if reference is None:
                continue  # a segment training never saw: its traffic row says so
            for name, entry in reference["features"].items():
                if name not in self.aliases:
                    continue
                fig = _Figure(version, seg, name, n, reference["rows"], entry)
                out.append(self._numeric(fig) if entry["kind"] == "numeric" else self._text(fig))
            prediction = reference.get("prediction")
            if PREDICTION in self.aliases and prediction and sum(prediction["counts"]):
                ref_rows = sum(prediction["counts"])
                out.append(
                    self._numeric(_Figure(version, seg, PREDICTION, n, ref_rows, prediction))
                )
        return out

    def _numeric(self, fig: _Figure) -> FeatureDrift:
        version, seg, name, n, entry = fig.version, fig.segment, fig.name, fig.rows, fig.entry
        got = self.bins.get((version, seg, name), {})
        nulls = got.get(None, 0)
        last = len(entry["edges"])  # the reference's last bin
        cur = np.zeros(last + 1)
        outside = 0
        ranged = bool(_bounds(entry))
        for j, k in got.items():
            if j is None:
                continue
            if ranged:
                outside += k if j == 0 or j > last + 1 else 0
                cur[min(max(j - 1, 0), last)] += k
            else:
                cur[0] += k  # no training value: one bin
        present = n - nulls
        window = _Window(
            cur,
            nulls,
            at=bin_representatives(entry["edges"], entry["min"], entry["max"]) if ranged else None,
            outside=outside / present if ranged and present else None,
        )
        return self._row(fig, "numeric", window)

    def _text(self, fig: _Figure) -> FeatureDrift:
        version, seg, name, entry = fig.version, fig.segment, fig.name, fig.entry
        index = {c: i for i, c in enumerate(entry["categories"])}
        cur = np.zeros(len(entry["counts"]))
        nulls = 0
        unseen: dict[str, int] = defaultdict(int)
        for value, is_unseen, k in self.values.get((version, seg, name), []):
            if value is None:
                nulls += k
                continue
            cur[index.get(value, len(cur) - 1)] += k
            if is_unseen:
                unseen[value] += k
        top = sorted(unseen.items(), key=lambda item: (-item[1], item[0]))[:UNSEEN_SHOWN]
        window = _Window(cur, nulls, unseen=dict(top))
        return self._row(fig, "categorical", window)

    def _row(self, fig: _Figure, kind: str, got: _Window) -> FeatureDrift:
        n, ref_rows, name, entry = fig.rows, fig.rows_reference, fig.name, fig.entry
        ref_nulls = entry.get("nulls", 0)
        stat, th = self.cfg.drift.thresholds(name, kind)
        own = self.cfg.drift.features.get(name)
        judged = n >= self.cfg.min_rows and not (own is not None and own.ignore)
        missing = n > 0 and got.nulls == n and ref_nulls < ref_rows
        value: float | None = None
        level: Level = "unjudged"
        if missing:
            level = "alert" if judged else "unjudged"  # every request lacks what training had
        elif n >= self.cfg.min_rows and (stat != "wasserstein" or got.at is not None):
            raw = float(statistic(stat, np.asarray(entry["counts"]), got.counts, at=got.at))
            value = None if math.isnan(raw) else raw
            if value is not None and judged:
                level = "alert" if value >= th.alert else "warn" if value >= th.warn else "ok"
        return FeatureDrift(
            version=fig.version, segment=fig.segment, feature=name, kind=kind, statistic=stat,
            value=value, level=level, rows=n, rows_reference=ref_rows,
            null_share=got.nulls / n if n else 0.0,
            null_share_reference=ref_nulls / ref_rows if ref_rows else 0.0,
            outside_range_share=got.outside, unseen=got.unseen or {}, missing=missing,
            warn=th.warn, alert=th.alert,
        )  # fmt: skip
