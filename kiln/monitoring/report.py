"""`kiln monitor report PIPELINE --html FILE`: one self-contained HTML page of a pipeline's
monitoring history, drawn from the stored windows and alert episodes.

It opens offline: plotly.js (from the installed plotly package, never a CDN) is embedded once,
in the first chart, and every other chart uses it. Every text from data is escaped: a feature
name, a segment value or an alert message is shown as text, never run as markup.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from kiln.errors import StoreError
from kiln.monitoring import charts
from kiln.monitoring.history import AlertEpisode, MonitorHistory, StoredWindow

__all__ = ["CHARTS", "render_report", "write_report"]

_CONFIG = {"displaylogo": False, "responsive": True}

CHARTS: list[tuple[str, str, str, Callable[[list[StoredWindow]], go.Figure | None], str]] = [
    ("chart-drift", "Drift per feature over time",
     "The drift statistic of each feature (and the prediction) over all segments, against the"
     " training reference of the version that served the window; the amber band warns, the red"
     " one alerts.", charts.drift_over_time, "No window has drift figures yet."),
    ("chart-heatmap", "Drift by feature and segment",
     "The latest window; pick an earlier one in the menu. Blank cells were not judged: the"
     " segment had too few requests, or the feature was missing.", charts.drift_heatmap,
     "No window has drift figures yet."),
    ("chart-performance", "Live metric against the training metric",
     "The primary metric on the labelled requests of each window (solid) and the serving"
     " version's holdout metric (dashed), per segment.", charts.performance,
     "No labelled requests yet: `kiln labels add` sends the actual outcomes."),
    ("chart-traffic", "Traffic share per segment",
     "Each segment's share of the window's requests (solid) and of the training rows (dashed).",
     charts.traffic_share, "No traffic recorded yet."),
    ("chart-latency", "Latency", "p50, p95 and p99 per version, in milliseconds.",
     charts.latency, "No latency recorded yet."),
    ("chart-errors", "Error rate", "The share of each version's requests answered with an error.",
     charts.error_rate, "No requests recorded yet."),
]  # fmt: skip
"""(div id, title, what it shows, the figure, what to say when there is nothing to draw)."""

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto;
       max-width: 1200px; color: #222; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 4px; } h2 { font-size: 1.2em; margin: 28px 0 4px; }
p.what { color: #555; margin: 0 0 8px; font-size: 0.92em; }
table { border-collapse: collapse; font-size: 0.85em; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f4f6f7; }
.state-ok { color: #1e8449; } .state-warn { color: #b9770e; font-weight: 600; }
.state-alert, .state-open { color: #c0392b; font-weight: 600; }
.state-no_traffic, .state-resolved { color: #777; }
.empty { color: #777; font-style: italic; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 8px 0; }
dt { color: #555; } dd { margin: 0; }
"""


def render_report(history: MonitorHistory, *, generated_at: datetime | None = None) -> str:
    """The whole page as one string (plotly.js embedded once when there is a chart)."""
    generated_at = generated_at or datetime.now(UTC)
    windows = history.windows
    parts = [_summary(history, generated_at)]
    bundle_included = False
    for div_id, title, what, build, empty in CHARTS:
        parts.append(f'<section id="{div_id}-section"><h2>{title}</h2><p class="what">{what}</p>')
        fig = build(windows)
        if fig is None:
            parts.append(f'<p class="empty">{escape(empty)}</p>')
        else:
            parts.append(
                pio.to_html(
                    fig,
                    include_plotlyjs=not bundle_included,
                    full_html=False,
                    div_id=div_id,
                    config=_CONFIG,
                    validate=True,
                )
            )
            bundle_included = True
        parts.append("</section>")
    parts.append(_alerts_table(history.alerts))
    parts.append(_windows_table(windows))
    title = f"Monitoring of {escape(history.pipeline)}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def write_report(history: MonitorHistory, path: Path) -> Path:
    """Write the page to ``path`` through a temporary file renamed into place: a reader (or a
    browser reloading it) never sees half a file."""
    path = Path(path)
    html = render_report(history)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise StoreError(
            f"cannot write the report to {path}: the folder {folder} does not exist",
            hint="create the folder, or give --html a path in an existing one",
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as any file the user writes, not mkstemp's 0600
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(f"cannot write the report to {path}: {e}",
                         hint="check the path and the free space") from e  # fmt: skip
    return path


def _when(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _length(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    span = timedelta(seconds=seconds)
    if span.days and not span.seconds:
        return f"{span.days}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def _summary(history: MonitorHistory, generated_at: datetime) -> str:
    windows = history.windows
    items: list[tuple[str, str]] = []
    if windows:
        latest = windows[-1]
        states = Counter(w.state for w in windows)
        items += [
            ("windows", f"{len(windows)} of {_length(history.window_seconds)}, from"
                        f" {_when(windows[0].start)} to {_when(latest.end)} UTC"),
            ("states", ", ".join(f'<span class="state-{escape(s)}">{escape(s)}</span> {n}'
                                 for s, n in sorted(states.items()))),
            ("latest window", f'{_when(latest.start)}: <span class="state-{escape(latest.state)}">'
                              f"{escape(latest.state)}</span>, {latest.rows:,} requests"
                              + (f"; worst: {escape(latest.worst)}" if latest.worst else "")),
            ("requests", f"{sum(w.rows for w in windows):,}"),
        ]  # fmt: skip
        labels = [w.result.labels for w in windows if w.result.labels is not None]
        if labels:
            items.append(("labels", f"{sum(c.labelled for c in labels):,} labelled requests,"
                                    f" {sum(c.unknown for c in labels):,} labels of unknown"
                                    f" requests, {sum(c.duplicates for c in labels):,}"
                                    " duplicates"))  # fmt: skip
        skipped = sum(len(w.result.skipped) for w in windows)
        if skipped:
            items.append(("corrupt capture files", f"{skipped} skipped (see the windows below)"))
    else:
        items.append(("windows", "none stored yet: `kiln monitor` computes them"))
    if history.other_lengths:
        others = ", ".join(f"{n} of {_length(s)}" for s, n in sorted(history.other_lengths.items()))
        items.append(("left out", f"windows of other lengths ({others})"))
    open_alerts = [a for a in history.alerts if a.status == "open"]
    items.append(("alerts", f"{len(history.alerts)} episodes, {len(open_alerts)} open"))
    items.append(("generated", f"{_when(generated_at)} UTC"))
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f"<h1>Monitoring of {escape(history.pipeline)}</h1><dl>{rows}</dl>"


def _alerts_table(alerts: list[AlertEpisode]) -> str:
    head = '<section id="alerts"><h2>Alerts</h2>'
    if not alerts:
        return head + '<p class="empty">No alert episode.</p></section>'
    columns = ("id", "check", "level", "status", "windows", "streak", "value", "threshold",
               "opened", "resolved", "acked", "retraining", "message")  # fmt: skip
    rows = []
    for a in alerts[::-1]:
        acked = "-"
        if a.acked_at is not None:
            acked = f"{escape(a.acked_by or '?')} at {_when(a.acked_at)}"
            if a.ack_note:
                acked += f": {escape(a.ack_note)}"
        runs = "<br>".join(
            f"{escape(r.id)} ({escape(r.trigger)}, {escape(r.status)}"
            + (f", v{r.model_version}" if r.model_version is not None else "") + ")"
            for r in a.runs
        ) or "-"  # fmt: skip
        cells = [
            str(a.id), escape(a.check), escape(a.level),
            f'<span class="state-{escape(a.status)}">{escape(a.status)}</span>',
            f"{_when(a.first_window)} to {_when(a.last_window)}", str(a.streak), _num(a.value),
            _num(a.threshold), _when(a.opened_at), _when(a.resolved_at), acked, runs,
            escape(a.message),
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{c}</th>" for c in columns)
    return f"{head}<table><tr>{header}</tr>{''.join(rows)}</table></section>"


def _windows_table(windows: list[StoredWindow]) -> str:
    head = '<section id="windows"><h2>Windows</h2>'
    if not windows:
        return head + '<p class="empty">No window stored yet.</p></section>'
    columns = ("window (UTC)", "requests", "state", "worst", "versions", "labelled", "notes")
    rows = []
    for w in windows[::-1]:
        r = w.result
        notes = [escape(n) for n in r.notes]
        notes += [f"skipped {escape(f)}: {escape(e)}" for f, e in r.skipped.items()]
        cells = [
            _when(w.start), f"{w.rows:,}",
            f'<span class="state-{escape(w.state)}">{escape(w.state)}</span>',
            escape(w.worst or "-"), ", ".join(f"v{v}" for v in r.versions) or "-",
            "-" if r.labels is None else f"{r.labels.labelled:,}", "<br>".join(notes) or "-",
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{c}</th>" for c in columns)
    return f"{head}<table><tr>{header}</tr>{''.join(rows)}</table></section>"
