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
    primary = manifest["metrics"]["primary"]
    t = Table(title=title, title_justify="left")
    for col, just in [
        ("segment", "left"), ("model", "left"), ("train rows", "right"),
        ("holdout rows", "right"), (primary, "right"), (f"fallback {primary}", "right"),
        ("wall s", "right"), ("cpu s", "right"), ("peak MiB", "right"),
    ]:  # fmt: skip
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for seg, ref in sorted(manifest["models"].items()):
        u = ref["usage"]
        t.add_row(
            seg, _own(ref.get("vs_fallback")), _fmt(ref["rows_train"]), _fmt(ref["rows_holdout"]),
            _fmt(ref["metrics"].get(primary)), _fmt(ref["fallback_metrics"].get(primary)),
            f"{u['wall_seconds']:.2f}", f"{u['cpu_seconds']:.2f}",
            f"{u['peak_memory_bytes'] / 2**20:.0f}",
        )  # fmt: skip
    for seg, info in sorted(manifest["routed_to_fallback"].items()):
        t.add_row(
            seg, f"[yellow]fallback[/] ({info['reason']})", "-", _fmt(info["rows_holdout"]),
            _fmt(info["fallback_metrics"].get(primary)),
            _fmt(info["fallback_metrics"].get(primary)), "-", "-", "-",
        )  # fmt: skip
    fb = manifest["fallback"]
    u = fb["usage"]
    t.add_row(
        "[bold](fallback)[/]", "global", _fmt(fb["rows_train"]), _fmt(fb["rows_holdout"]),
        _fmt(fb["metrics"].get(primary)), _fmt(fb["metrics"].get(primary)),
        f"{u['wall_seconds']:.2f}", f"{u['cpu_seconds']:.2f}",
        f"{u['peak_memory_bytes'] / 2**20:.0f}",
    )  # fmt: skip
    overall = manifest["metrics"]["overall"]
    t.caption = (
        f"routed holdout {primary}: {_fmt(overall.get(primary))}   "
        f"fallback only: {_fmt(manifest['metrics']['fallback_only'].get(primary))}"
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
        "shadows", "blocked",
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
        )
    return t
