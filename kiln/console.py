"""Rich rendering for the CLI: the run's progress bar and the tables it prints."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["RichReporter", "gate_table", "segment_table", "status_table"]

_GATE_STYLE = {"passed": "green", "failed": "red", "pending": "cyan", "skipped": "dim"}
_STAGE_STYLE = {
    "production": "green", "canary": "cyan", "shadow": "cyan", "blocked": "red",
    "candidate": "white", "archived": "dim",
}  # fmt: skip


class RichReporter:
    """Steps as lines, the train fan-out as a progress bar of tasks done and failed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: Any = None
        self._failed = 0

    def step(self, name: str, status: str, detail: str = "") -> None:
        if name == "train" and status != "running":
            self._close()
        if status == "running":
            return
        mark = {"succeeded": "[green]✓[/]", "skipped": "[dim]-[/]"}.get(status, "[red]✗[/]")
        self.console.print(f"{mark} {name:<9} {detail}")

    def tasks_started(self, total: int, done: int) -> None:
        self._progress = Progress(
            TextColumn("  train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, completed=done, failed=0)

    def task_done(self, key: str, ok: bool) -> None:
        if self._progress is None:
            return
        if not ok:
            self._failed += 1
        self._progress.update(self._task, advance=1, failed=self._failed)

    def warn(self, text: str) -> None:
        self.console.print(f"[yellow]! {text}[/]")

    def _close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _pair(own: dict[str, Any], fallback: dict[str, Any], name: str) -> str:
    return f"{_fmt(own.get(name))} ({_fmt(fallback.get(name))})"


def _scores(values: dict[str, Any], names: list[str]) -> str:
    return "  ".join(f"{n}={_fmt(values.get(n))}" for n in names)


def _own(versus: dict[str, str] | None) -> str:
    """The model column of a segment served by its own model: marked when it lost to the
    fallback on its holdout, or was not compared (too few holdout rows)."""
    verdict = (versus or {}).get("verdict")
    if verdict == "worse":
        return "own [red](worse than fallback)[/]"
    if verdict == "not_judged":
        return f"own [dim]({escape(str((versus or {}).get('reason')))})[/]"
    return "own"


def segment_table(manifest: dict[str, Any], title: str) -> Table:
    """One row per segment: its model, rows, every configured metric on its holdout rows with
    the fallback's value on the same rows in brackets, and its resource usage."""
    metrics = manifest["metrics"]
    primary = metrics["primary"]
    names = [primary, *(n for n in metrics["overall"] if n != primary)]
    t = Table(title=title, title_justify="left")
    for col, just in [("segment", "left"), ("model", "left"), ("train rows", "right"),
                      ("holdout rows", "right")]:  # fmt: skip
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for name in names:
        t.add_column(f"{name}{'*' if name == primary else ''} (fallback)", justify="right")
    for col in ("wall s", "cpu s", "peak MiB"):
        t.add_column(col, justify="right")
    for seg, ref in sorted(manifest["models"].items()):
        u = ref["usage"]
        t.add_row(
            seg, f"from v{ref['from_version']}" if ref.get("from_version") else _own(
                ref.get("vs_fallback")
            ),
            _fmt(ref["rows_train"]), _fmt(ref["rows_holdout"]),
            *(_pair(ref["metrics"], ref["fallback_metrics"], n) for n in names),
            f"{u['wall_seconds']:.2f}", f"{u['cpu_seconds']:.2f}",
            f"{u['peak_memory_bytes'] / 2**20:.0f}",
        )  # fmt: skip
    for seg, info in sorted(manifest["routed_to_fallback"].items()):
        fb_metrics = info["fallback_metrics"]
        t.add_row(
            seg, f"[yellow]fallback[/] ({info['reason']})", "-", _fmt(info["rows_holdout"]),
            *(_pair(fb_metrics, fb_metrics, n) for n in names), "-", "-", "-",
        )  # fmt: skip
    fb = manifest["fallback"]
    u = fb["usage"]
    t.add_row(
        "[bold](fallback)[/]",
        f"global, from v{fb['from_version']}" if fb.get("from_version") else "global",
        _fmt(fb["rows_train"]), _fmt(fb["rows_holdout"]),
        *(_pair(fb["metrics"], fb["metrics"], n) for n in names),
        f"{u['wall_seconds']:.2f}", f"{u['cpu_seconds']:.2f}",
        f"{u['peak_memory_bytes'] / 2**20:.0f}",
    )  # fmt: skip
    t.caption = (
        f"* primary metric; (fallback): the fallback model on the same holdout rows\n"
        f"routed holdout: {_scores(metrics['overall'], names)}   "
        f"fallback only: {_scores(metrics['fallback_only'], names)}"
    )
    return t


def gate_table(results: list[Any], title: str) -> Table:
    """Gate results (records or results: ``gate``, ``status``, ``summary``) as a table."""
    t = Table(title=title, title_justify="left")
    t.add_column("gate")
    t.add_column("status")
    t.add_column("evidence", overflow="fold")
    for r in results:
        style = _GATE_STYLE.get(r.status, "white")
        t.add_row(r.gate, f"[{style}]{r.status}[/]", escape(r.summary))
    return t


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def status_table(rows: list[dict[str, Any]]) -> Table:
    """One row per pipeline: what serves, since when, the last run, the gates, the rest."""
    t = Table(title="pipelines", title_justify="left")
    for col in (
        "pipeline", "production", "age", "last run", "latest version", "gates", "canary",
        "shadows", "blocked", "monitoring", "$/month",
    ):  # fmt: skip
        t.add_column(col)
    for r in rows:
        gates = r["gates"]
        gate_text = "-"
        if gates:
            failed = [g for g, s in gates.items() if s == "failed"]
            pending = [g for g, s in gates.items() if s == "pending"]
            if failed:
                gate_text = "[red]failed[/]: " + ", ".join(failed)
            elif pending:
                gate_text = "[cyan]pending[/]: " + ", ".join(pending)
            else:
                gate_text = "[green]passed[/]"
        latest = r["latest"]
        stage = latest["stage"] if latest else None
        t.add_row(
            escape(r["pipeline"]),
            f"[green]v{r['production']}[/]" if r["production"] else "[yellow]none[/]",
            _age(r["production_age"]),
            r["last_run"] or "-",
            f"v{latest['version']} [{_STAGE_STYLE.get(stage or '', 'white')}]{stage}[/]"
            if latest
            else "-",
            gate_text,
            r["canary"] or "-",
            ", ".join(f"v{v}" for v in r["shadows"]) or "-",
            ", ".join(f"v{v}" for v in r["blocked"]) or "-",
            _monitoring(r.get("monitoring") or {}),
            r.get("cost_per_month") or "-",
        )
    return t


_MONITOR_STYLE = {"ok": "green", "warn": "yellow", "alert": "bold red", "no traffic": "dim"}


def _monitoring(m: dict[str, Any]) -> str:
    """``alert: temp in EWR (psi 0.41 >= 0.25)``: the latest window's state and its worst
    feature and segment."""
    state = str(m.get("state") or "not monitored yet")
    text = f"[{_MONITOR_STYLE.get(state, 'dim')}]{state}[/]"
    if not m.get("check"):
        return text
    what = m.get("feature") or m["check"]
    if what == "__prediction__":
        what = "prediction"
    where = m.get("segment")
    place = "" if where in (None, "__all__") else f" in {where}"
    figure = f"{m.get('statistic') or ''} {_fmt(m.get('value'))}".strip()
    return f"{text}: {escape(str(what))}{escape(place)} ({figure} >= {_fmt(m.get('threshold'))})"
