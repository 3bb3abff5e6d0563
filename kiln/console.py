"""Rich rendering for the CLI: the run's progress bar and the tables it prints."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["RichReporter", "segment_table"]


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
        mark = "[green]✓[/]" if status == "succeeded" else "[red]✗[/]"
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
            seg, "own", _fmt(ref["rows_train"]), _fmt(ref["rows_holdout"]),
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
