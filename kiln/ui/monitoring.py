"""The monitoring page's data: the stored windows of one pipeline turned into plain figure dicts
(plotly's JSON) for the ``chart`` macro, and its alert episodes.

The figures are those of ``kiln monitor report`` (kiln/monitoring/charts.py: same traces, same
colours, same escaping of names), built as dicts rather than ``go.Figure`` s: validating a
figure costs hundreds of milliseconds on 200 windows, past the page's budget. Only what a
chart draws is read from each window's stored document (kiln.registry.queries.monitoring): the
drift rows, the bulk of a window, only for the heatmap's window.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from itertools import cycle
from typing import Any

from kiln.monitoring.charts import (
    _bands,
    _cell,
    _cell_text,
    _feature,
    _name,
    _scale,
)
from kiln.monitoring.findings import ALL, PREDICTION, FeatureDrift, LatencyRow, PerformanceRow
from kiln.registry.queries.monitoring import (
    MAX_WINDOWS,
    MonitoringRows,
    WindowRow,
    monitoring_rows,
)
from kiln.stores import MetadataStore
from kiln.stores.metadata.alerts import AlertRecord

__all__ = ["MonitoringView", "WindowPoint", "monitoring_view"]

Figure = dict[str, Any]
PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692",
           "#B6E880", "#FF97FF", "#FECB52")  # fmt: skip
"""plotly's ``qualitative.Plotly``, the report's colours."""
_LAYOUT: dict[str, Any] = {
    "height": 380,
    "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
    "hovermode": "closest",
    "plot_bgcolor": "#fff",
    "xaxis": {"title": {"text": "window (UTC)"}, "gridcolor": "#eee"},
}


@dataclass(frozen=True)
class WindowPoint:
    """What the charts read of one window: its figures over time."""

    start: datetime
    end: datetime
    x: str
    """The start as plotly's x (naive UTC: plotly.js has no time zones)."""
    rows: int
    state: str
    worst: str | None
    version: int | None
    """The version that answered most of its requests."""
    performance: list[PerformanceRow]
    latency: list[LatencyRow]


@dataclass(frozen=True)
class MonitoringView:
    rows: MonitoringRows
    points: list[WindowPoint]
    heatmap_window: WindowPoint | None
    """The window the heatmap shows (the newest with drift figures)."""
    heatmap_cells: list[FeatureDrift]
    heatmap: Figure | None
    live_metric: Figure | None
    latency: Figure | None
    error_rate: Figure | None

    @property
    def alerts(self) -> list[AlertRecord]:
        return self.rows.alerts

    @property
    def state(self) -> str:
        """The newest window's state, or ``not monitored yet``."""
        return self.points[-1].state if self.points else "not monitored yet"


def monitoring_view(
    metadata: MetadataStore, pipeline: str, *, limit: int = MAX_WINDOWS
) -> MonitoringView:
    """The figures and alerts of ``pipeline`` (NotFoundError for an unknown one)."""
    rows = monitoring_rows(metadata, pipeline, limit=limit)
    points = [_point(w) for w in rows.windows]
    shown, cells = _heatmap_window(rows.windows, points)
    return MonitoringView(
        rows=rows,
        points=points,
        heatmap_window=shown,
        heatmap_cells=cells,
        heatmap=None if shown is None else heatmap(shown, cells),
        live_metric=live_metric(points),
        latency=latency(points),
        error_rate=error_rate(points),
    )


def _rows(kind: type[Any], items: list[dict[str, Any]] | None) -> list[Any]:
    names = kind.__dataclass_fields__.keys()
    return [kind(**{k: v for k, v in i.items() if k in names}) for i in items or []]


def _point(w: WindowRow) -> WindowPoint:
    latency: list[LatencyRow] = _rows(LatencyRow, w.latency)
    return WindowPoint(
        start=w.start,
        end=w.end,
        x=_x(w.start),
        rows=w.rows,
        state=w.state,
        worst=w.worst,
        version=_serving_version(latency, w),
        performance=_rows(PerformanceRow, w.performance),
        latency=latency,
    )


def _serving_version(latency: list[LatencyRow], w: WindowRow) -> int | None:
    """As ``kiln.monitoring.charts.serving_version``: most requests, else most traffic rows,
    else most drift rows (of the windows whose drift rows were read)."""
    counts: dict[int, int] = defaultdict(int)
    for lat in latency:
        if lat.segment == ALL:
            counts[lat.version] += lat.requests
    if not counts:
        for tr in w.traffic:
            counts[int(tr["version"])] += int(tr["rows"])
    if not counts:
        for d in w.drift or []:
            if d.get("segment") == ALL:
                v = int(d["version"])
                counts[v] = max(counts[v], int(d.get("rows", 0)))
    if not counts:
        return None
    return max(counts, key=lambda v: (counts[v], -list(counts).index(v)))


def _heatmap_window(
    windows: list[WindowRow], points: list[WindowPoint]
) -> tuple[WindowPoint | None, list[FeatureDrift]]:
    for w, p in zip(windows[::-1], points[::-1], strict=True):
        if w.drift is None:
            break
        cells = [d for d in _rows(FeatureDrift, w.drift) if d.version == p.version]
        if cells:
            return p, cells
    return None, []


def _x(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")


def heatmap(window: WindowPoint, cells: list[FeatureDrift]) -> Figure:
    """Feature x segment drift of one window (the report's heatmap without its menu of earlier
    windows: each would add a copy of the grid to the page). Blank cells were not judged."""
    features = sorted({d.feature for d in cells}, key=lambda f: (f == PREDICTION, f))
    segments = sorted({d.segment for d in cells}, key=lambda s: (s != ALL, s))
    warn, alert = _bands(cells) or (0.1, 0.25)
    by = {(d.feature, d.segment): d for d in cells}
    z = [[_cell(by.get((f, s))) for s in segments] for f in features]
    text = [[_cell_text(by.get((f, s))) for s in segments] for f in features]
    zmax = max(alert * 2, max((v for r in z for v in r if v), default=0.0)) or 1.0
    trace = {
        "type": "heatmap", "z": z, "text": text, "texttemplate": "%{text}",
        "x": [_name(s) for s in segments], "y": [_feature(f) for f in features],
        "zmin": 0, "zmax": zmax, "colorscale": _scale(warn, alert, zmax),
        "hovertemplate": "%{y} x %{x}: %{z:.4f}<extra></extra>", "xgap": 2, "ygap": 2,
    }  # fmt: skip
    layout = {
        **_LAYOUT,
        "height": max(320, 28 * len(features) + 140),
        "title": {
            "text": f"window {window.x} UTC, v{window.version},"
            f" {window.rows:,} requests ({window.state})",
            "font": {"size": 14},
        },
        "xaxis": {"title": {"text": "segment"}, "type": "category"},
        "yaxis": {"autorange": "reversed", "type": "category", "automargin": True},
    }
    return {"data": [trace], "layout": layout}


def _version_marks(points: list[WindowPoint]) -> dict[str, Any]:
    """A dotted line (and a note) where the serving version changes."""
    shapes, notes = [], []
    before: int | None = None
    for p in points:
        if p.version is None:
            continue
        if before is not None and p.version != before:
            x = p.x
            line = {"dash": "dot", "color": "#555", "width": 1}
            shapes.append({"type": "line", "x0": x, "x1": x, "y0": 0, "y1": 1, "xref": "x",
                           "yref": "paper", "line": line})  # fmt: skip
            notes.append({"x": x, "y": 1, "xref": "x", "yref": "paper", "showarrow": False,
                          "text": f"v{p.version} serves", "xanchor": "left",
                          "yanchor": "bottom"})  # fmt: skip
        before = p.version
    return {"shapes": shapes, "annotations": notes}


def _layout(points: list[WindowPoint], y: dict[str, Any]) -> dict[str, Any]:
    return {**_LAYOUT, "yaxis": {"gridcolor": "#eee", **y}, **_version_marks(points)}


def live_metric(points: list[WindowPoint]) -> Figure | None:
    """Per segment, the live primary metric (solid) against the serving version's holdout
    metric (dashed), for the version with the most labels in each window; None without any
    labelled window."""
    live: dict[str, list[tuple[str, PerformanceRow]]] = defaultdict(list)
    metrics: set[str] = set()
    for p in points:
        best: dict[str, PerformanceRow] = {}
        for r in p.performance:
            if r.segment not in best or r.labelled > best[r.segment].labelled:
                best[r.segment] = r
        for segment, r in best.items():
            live[segment].append((p.x, r))
            metrics.add(r.metric)
    if not any(r.value is not None for rows in live.values() for _, r in rows):
        return None
    data = []
    colours = cycle(PALETTE)
    for segment in sorted(live, key=lambda s: (s != ALL, s)):
        rows, colour, name = live[segment], next(colours), _name(segment)
        xs = [x for x, _ in rows]
        data.append({
            "type": "scatter", "x": xs, "y": [r.value for _, r in rows], "name": f"{name} live",
            "legendgroup": name, "mode": "lines+markers", "line": {"color": colour},
            "customdata": [[r.version, r.labelled, r.requests, r.level, _pct(r.change)]
                           for _, r in rows],
            "hovertemplate": f"<b>{name}</b> %{{x}}: %{{y:.4g}} (%{{customdata[3]}},"
            " %{customdata[4]} worse)<br>v%{customdata[0]}, %{customdata[1]} labelled of"
            " %{customdata[2]} requests<extra></extra>",
        })  # fmt: skip
        data.append({
            "type": "scatter", "x": xs, "y": [r.reference for _, r in rows],
            "name": f"{name} training", "legendgroup": name, "mode": "lines",
            "line": {"color": colour, "dash": "dash", "shape": "hv"},
            "hovertemplate": f"<b>{name}</b> holdout metric %{{y:.4g}}<extra></extra>",
        })  # fmt: skip
    title = " / ".join(sorted(escape(m) for m in metrics))
    return {"data": data, "layout": _layout(points, {"title": {"text": title}})}


def _overall(points: list[WindowPoint]) -> dict[int, list[tuple[str, LatencyRow]]]:
    found: dict[int, list[tuple[str, LatencyRow]]] = defaultdict(list)
    for p in points:
        for r in p.latency:
            if r.segment == ALL:
                found[r.version].append((p.x, r))
    return found


def latency(points: list[WindowPoint]) -> Figure | None:
    """p50, p95 and p99 in ms per version per window; None when no latency was recorded."""
    by_version = _overall(points)
    if not any(r.p50_ms is not None for rows in by_version.values() for _, r in rows):
        return None
    data = []
    colours = cycle(PALETTE)
    for version in sorted(by_version):
        rows, colour = by_version[version], next(colours)
        for q, dash in (("p50", "dot"), ("p95", "dash"), ("p99", "solid")):
            data.append({
                "type": "scatter", "x": [x for x, _ in rows],
                "y": [getattr(r, f"{q}_ms") for _, r in rows], "name": f"v{version} {q}",
                "legendgroup": f"v{version}", "mode": "lines+markers",
                "line": {"color": colour, "dash": dash},
                "customdata": [[r.requests] for _, r in rows],
                "hovertemplate": f"v{version} {q} %{{y:.1f}} ms, %{{customdata[0]}} requests"
                "<extra></extra>",
            })  # fmt: skip
    return {"data": data, "layout": _layout(points, {"title": {"text": "latency (ms)"}})}


def error_rate(points: list[WindowPoint]) -> Figure | None:
    """The share of each version's requests answered with an error, per window."""
    by_version = _overall(points)
    if not by_version:
        return None
    data = []
    for version in sorted(by_version):
        rows = by_version[version]
        data.append({
            "type": "scatter", "x": [x for x, _ in rows], "y": [r.error_rate for _, r in rows],
            "name": f"v{version}", "mode": "lines+markers",
            "customdata": [[r.errors, r.requests] for _, r in rows],
            "hovertemplate": f"v{version} %{{y:.2%}}: %{{customdata[0]}} errors of"
            " %{customdata[1]} requests<extra></extra>",
        })  # fmt: skip
    top = max((r.error_rate for rows in by_version.values() for _, r in rows), default=0.0)
    y = {"title": {"text": "error rate"}, "tickformat": ".1%", "range": [0, max(0.05, top * 1.15)]}
    return {"data": data, "layout": _layout(points, y)}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"
