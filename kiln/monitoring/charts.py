"""The report's charts: plotly figures built from the stored windows of one pipeline.

Each function takes the windows (oldest first) and returns a figure, or None when the windows
hold nothing to draw (no labels yet, no latency recorded), so the page can say why instead of
showing an empty frame. Every text that comes from data (feature, segment and version names) is
HTML-escaped: plotly renders a subset of HTML in trace names and hover labels.

Times are the windows' starts in UTC, written as naive ISO strings: plotly.js has no time zones
and would otherwise shift them to the reader's clock.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from html import escape
from typing import Any

import plotly.graph_objects as go

from kiln.monitoring.findings import ALL, PREDICTION, FeatureDrift, WindowResult
from kiln.monitoring.history import StoredWindow

__all__ = [
    "drift_heatmap",
    "drift_over_time",
    "error_rate",
    "latency",
    "performance",
    "serving_version",
    "traffic_share",
]

HEATMAP_WINDOWS = 60
"""The heatmap's selector offers the most recent windows only (each adds a copy of the grid)."""
_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "height": 420,
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "hovermode": "closest",
    "legend": {"orientation": "v"},
}


def _x(w: StoredWindow) -> str:
    return w.start.strftime("%Y-%m-%d %H:%M:%S")


def _name(segment: str) -> str:
    return "all" if segment == ALL else escape(segment)


def _feature(feature: str) -> str:
    return "prediction" if feature == PREDICTION else escape(feature)


def serving_version(result: WindowResult) -> int | None:
    """The version that answered most of the window's requests (its figures are the ones a
    line over time follows; a canary's are in the hover and the heatmap's selector)."""
    counts: Counter[int] = Counter()
    for lat in result.latency:
        if lat.segment == ALL:
            counts[lat.version] += lat.requests
    if not counts:
        for tr in result.traffic:
            counts[tr.version] += tr.rows
    if not counts:
        for d in result.drift:
            if d.segment == ALL:
                counts[d.version] = max(counts[d.version], d.rows)
    return counts.most_common(1)[0][0] if counts else None


def _version_marks(fig: go.Figure, windows: list[StoredWindow]) -> None:
    """A dotted vertical line where the serving version changes: a promotion or a rollback,
    placed on the first window the new version served most of."""
    before: int | None = None
    for w in windows:
        version = serving_version(w.result)
        if version is None:
            continue
        if before is not None and version != before:
            fig.add_shape(type="line", x0=_x(w), x1=_x(w), y0=0, y1=1, xref="x", yref="paper",
                          line={"dash": "dot", "color": "#555", "width": 1})  # fmt: skip
            fig.add_annotation(x=_x(w), y=1, xref="x", yref="paper", text=f"v{version} serves",
                               showarrow=False, xanchor="left", yanchor="bottom")  # fmt: skip
        before = version


def _bands(rows: Iterable[FeatureDrift]) -> tuple[float, float] | None:
    pairs = Counter((d.warn, d.alert) for d in rows if d.warn is not None and d.alert is not None)
    if not pairs:
        return None
    (warn, alert), _ = pairs.most_common(1)[0]
    return float(warn), float(alert)


def drift_over_time(windows: list[StoredWindow]) -> go.Figure | None:
    """One line per feature: the drift statistic of the overall segment of the serving version,
    with the warn (amber) and alert (red) bands of most features behind them."""
    series: dict[str, list[tuple[str, FeatureDrift]]] = defaultdict(list)
    overall: list[FeatureDrift] = []
    for w in windows:
        version = serving_version(w.result)
        for d in w.result.drift:
            if d.segment == ALL and d.version == version:
                series[d.feature].append((_x(w), d))
                overall.append(d)
    if not series:
        return None
    fig = go.Figure()
    top = 0.0
    for feature in sorted(series, key=lambda f: (f == PREDICTION, f)):
        points = series[feature]
        top = max([top] + [d.value for _, d in points if d.value is not None])
        fig.add_trace(
            go.Scatter(
                x=[x for x, _ in points],
                y=[d.value for _, d in points],
                mode="lines+markers",
                name=_feature(feature),
                customdata=[
                    [d.version, escape(d.statistic), d.level, d.rows, _pct(d.null_share)]
                    for _, d in points
                ],
                hovertemplate=f"<b>{_feature(feature)}</b> %{{x}}<br>%{{customdata[1]}}"
                " %{y:.4f} (%{customdata[2]})<br>v%{customdata[0]}, %{customdata[3]} rows,"
                " nulls %{customdata[4]}<extra></extra>",
            )
        )
    bands = _bands(overall)
    if bands is not None:
        warn, alert = bands
        top = max(top, alert) * 1.15
        fig.add_hrect(y0=warn, y1=alert, fillcolor="#f5b041", opacity=0.15, line_width=0,
                      layer="below")  # fmt: skip
        fig.add_hrect(y0=alert, y1=top, fillcolor="#e74c3c", opacity=0.12, line_width=0,
                      layer="below")  # fmt: skip
    statistics = sorted({escape(d.statistic) for d in overall})
    fig.update_layout(**_LAYOUT, yaxis_title=" / ".join(statistics), xaxis_title="window (UTC)")
    _version_marks(fig, windows)
    return fig


def drift_heatmap(windows: list[StoredWindow]) -> go.Figure | None:
    """Feature x segment drift of the latest window with drift figures; a selector shows the
    earlier ones. Blank cells were not judged (too few rows, or the feature was missing)."""
    grids = []
    for w in windows[::-1]:
        version = serving_version(w.result)
        rows = [d for d in w.result.drift if d.version == version]
        if rows:
            grids.append((w, version, rows))
        if len(grids) == HEATMAP_WINDOWS:
            break
    if not grids:
        return None
    features = sorted({d.feature for _, _, rows in grids for d in rows},
                      key=lambda f: (f == PREDICTION, f))  # fmt: skip
    segments = sorted({d.segment for _, _, rows in grids for d in rows},
                      key=lambda s: (s != ALL, s))  # fmt: skip
    bands = _bands(d for _, _, rows in grids for d in rows) or (0.1, 0.25)
    cells = []
    for w, version, rows in grids:
        by = {(d.feature, d.segment): d for d in rows}
        z = [[_cell(by.get((f, s))) for s in segments] for f in features]
        text = [[_cell_text(by.get((f, s))) for s in segments] for f in features]
        cells.append((w, version, z, text))
    warn, alert = bands
    zmax = max(alert * 2, max((v for *_, z, _ in cells for r in z for v in r if v), default=0))
    zmax = zmax or 1.0  # all zero, thresholds too
    first_w, first_v, first_z, first_text = cells[0]
    fig = go.Figure(
        go.Heatmap(
            z=first_z,
            text=first_text,
            texttemplate="%{text}",
            x=[_name(s) for s in segments],
            y=[_feature(f) for f in features],
            zmin=0,
            zmax=zmax,
            colorscale=_scale(warn, alert, zmax),
            hovertemplate="%{y} x %{x}: %{z:.4f}<extra></extra>",
            xgap=2,
            ygap=2,
        )
    )
    buttons = [
        {"label": f"{_x(w)} (v{v})", "method": "update",
         "args": [{"z": [z], "text": [text]}, {"title.text": _heat_title(w, v)}]}
        for w, v, z, text in cells
    ]  # fmt: skip
    fig.update_layout(
        **{**_LAYOUT, "height": max(320, 28 * len(features) + 160)},
        title={"text": _heat_title(first_w, first_v), "font": {"size": 14}},
        updatemenus=[{"buttons": buttons, "direction": "down", "x": 1, "xanchor": "right",
                      "y": 1.12, "yanchor": "bottom", "showactive": True}],
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    return fig


def _scale(warn: float, alert: float, zmax: float) -> list[list[Any]]:
    """Green below warn, amber from warn, red from alert, darker up to the largest value;
    stops at equal places (a warn equal to alert, a zero warn) are kept once."""
    stops: list[list[Any]] = [[0.0, "#e8f6ef"]]
    for at, color in ((warn / zmax, "#fdebd0"), (alert / zmax, "#f1948a"), (1.0, "#922b21")):
        if stops[-1][0] < at <= 1.0:
            stops.append([at, color])
    if stops[-1][0] < 1.0:
        stops.append([1.0, "#922b21"])
    return stops


def _heat_title(w: StoredWindow, version: int | None) -> str:
    return f"window {_x(w)} UTC, v{version}, {w.rows:,} requests ({w.state})"


def _cell(d: FeatureDrift | None) -> float | None:
    return None if d is None else d.value


def _cell_text(d: FeatureDrift | None) -> str:
    if d is None:
        return ""
    if d.missing:
        return "missing"
    if d.value is None:
        return f"{d.rows} rows"
    return f"{d.value:.3f}"


def performance(windows: list[StoredWindow]) -> go.Figure | None:
    """Per segment, the live primary metric on the window's labelled requests (solid) against
    the holdout metric of the version that served them (dashed), for the version with the most
    labels in each window."""
    live: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    metrics: set[str] = set()
    for w in windows:
        best: dict[str, Any] = {}
        for p in w.result.performance:
            if p.segment not in best or p.labelled > best[p.segment].labelled:
                best[p.segment] = p
        for segment, p in best.items():
            live[segment].append((_x(w), p))
            metrics.add(p.metric)
    if not any(p.value is not None for rows in live.values() for _, p in rows):
        return None
    fig = go.Figure()
    palette = _palette()
    for segment in sorted(live, key=lambda s: (s != ALL, s)):
        points, color, name = live[segment], next(palette), _name(segment)
        hover = [[p.version, p.labelled, p.requests, p.level, _pct(p.change)] for _, p in points]
        fig.add_trace(go.Scatter(
            x=[x for x, _ in points], y=[p.value for _, p in points], name=f"{name} live",
            legendgroup=name, mode="lines+markers", line={"color": color}, customdata=hover,
            hovertemplate=f"<b>{name}</b> %{{x}}: %{{y:.4g}} (%{{customdata[3]}},"
            " %{customdata[4]} worse)<br>v%{customdata[0]}, %{customdata[1]} labelled of"
            " %{customdata[2]} requests<extra></extra>",
        ))  # fmt: skip
        fig.add_trace(go.Scatter(
            x=[x for x, _ in points], y=[p.reference for _, p in points],
            name=f"{name} training", legendgroup=name, mode="lines",
            line={"color": color, "dash": "dash", "shape": "hv"},
            hovertemplate=f"<b>{name}</b> holdout metric %{{y:.4g}}<extra></extra>",
        ))  # fmt: skip
    fig.update_layout(**_LAYOUT, yaxis_title=" / ".join(sorted(escape(m) for m in metrics)),
                      xaxis_title="window (UTC)")  # fmt: skip
    _version_marks(fig, windows)
    return fig


def latency(windows: list[StoredWindow]) -> go.Figure | None:
    """p50, p95 and p99 latency in ms of every version's requests, per window."""
    by_version = _overall_latency(windows)
    if not any(r.p50_ms is not None for rows in by_version.values() for _, r in rows):
        return None
    fig = go.Figure()
    dashes = {"p50": "dot", "p95": "dash", "p99": "solid"}
    palette = _palette()
    for version in sorted(by_version):
        points, color = by_version[version], next(palette)
        for q, dash in dashes.items():
            fig.add_trace(go.Scatter(
                x=[x for x, _ in points], y=[getattr(r, f"{q}_ms") for _, r in points],
                name=f"v{version} {q}", legendgroup=f"v{version}", mode="lines+markers",
                line={"color": color, "dash": dash},
                customdata=[[r.requests] for _, r in points],
                hovertemplate=f"v{version} {q} %{{y:.1f}} ms, %{{customdata[0]}} requests"
                "<extra></extra>",
            ))  # fmt: skip
    fig.update_layout(**_LAYOUT, yaxis_title="latency (ms)", xaxis_title="window (UTC)")
    _version_marks(fig, windows)
    return fig


def error_rate(windows: list[StoredWindow]) -> go.Figure | None:
    """The share of each version's requests answered with an error, per window."""
    by_version = _overall_latency(windows)
    if not by_version:
        return None
    fig = go.Figure()
    for version in sorted(by_version):
        points = by_version[version]
        fig.add_trace(go.Scatter(
            x=[x for x, _ in points], y=[r.error_rate for _, r in points], name=f"v{version}",
            mode="lines+markers", customdata=[[r.errors, r.requests] for _, r in points],
            hovertemplate=f"v{version} %{{y:.2%}}: %{{customdata[0]}} errors of"
            " %{customdata[1]} requests<extra></extra>",
        ))  # fmt: skip
    top = max((r.error_rate for rows in by_version.values() for _, r in rows), default=0.0)
    fig.update_layout(
        **_LAYOUT,
        yaxis_title="error rate",
        yaxis_tickformat=".1%",
        yaxis_range=[0, max(0.05, top * 1.15)],
        xaxis_title="window (UTC)",
    )
    _version_marks(fig, windows)
    return fig


def _overall_latency(windows: list[StoredWindow]) -> dict[int, list[tuple[str, Any]]]:
    by_version: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for w in windows:
        for r in w.result.latency:
            if r.segment == ALL:
                by_version[r.version].append((_x(w), r))
    return by_version


def traffic_share(windows: list[StoredWindow]) -> go.Figure | None:
    """Each segment's share of the window's requests (all versions together, solid) against its
    share of the serving version's training rows (dashed)."""
    shares: dict[str, list[tuple[str, float, float | None, int]]] = defaultdict(list)
    for w in windows:
        rows: Counter[str] = Counter()
        reference: dict[str, float] = {}
        version = serving_version(w.result)
        for tr in w.result.traffic:
            rows[tr.segment] += tr.rows
            if tr.version == version:
                reference[tr.segment] = tr.share_reference
        total = sum(rows.values())
        for segment, n in rows.items():
            shares[segment].append((_x(w), n / total if total else 0.0, reference.get(segment), n))
    if not shares:
        return None
    fig = go.Figure()
    palette = _palette()
    for segment in sorted(shares):
        points, color, name = shares[segment], next(palette), _name(segment)
        fig.add_trace(go.Scatter(
            x=[p[0] for p in points], y=[p[1] for p in points], name=name, legendgroup=name,
            mode="lines+markers", line={"color": color}, customdata=[[p[3]] for p in points],
            hovertemplate=f"<b>{name}</b> %{{x}}: %{{y:.1%}} (%{{customdata[0]}} requests)"
            "<extra></extra>",
        ))  # fmt: skip
        fig.add_trace(go.Scatter(
            x=[p[0] for p in points], y=[p[2] for p in points], name=f"{name} training",
            legendgroup=name, mode="lines", line={"color": color, "dash": "dash", "shape": "hv"},
            hovertemplate=f"<b>{name}</b> training share %{{y:.1%}}<extra></extra>",
        ))  # fmt: skip
    fig.update_layout(**_LAYOUT, yaxis_title="share of requests", yaxis_tickformat=".0%",
                      xaxis_title="window (UTC)")  # fmt: skip
    _version_marks(fig, windows)
    return fig


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _palette() -> Iterator[str]:
    import itertools

    import plotly.colors

    return itertools.cycle(plotly.colors.qualitative.Plotly)
