"""The multi-process metrics folder: named after the serving process, removed on a clean stop,
and a folder left by a killed server is removed by the next ``serve`` (never a live one's)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import Trained

from kiln.serving._metrics import multiprocess_dir, remove_stale_dirs


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def folder(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    (path / "counter_1.db").write_bytes(b"\0" * 16)
    return path


def test_stale_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = folder(tmp_path, f"kiln-metrics-{dead_pid()}-x1y2")
    live = folder(tmp_path, f"kiln-metrics-{os.getpid()}-a1b2")
    unnamed = folder(tmp_path, "kiln-metrics-q8z9abc")  # older Kiln: whose it is is unknown
    other = folder(tmp_path, "other-123-x")

    assert remove_stale_dirs(str(tmp_path)) == [dead]
    assert not dead.exists()
    assert live.exists() and unnamed.exists() and other.exists()

    made = Path(multiprocess_dir(str(tmp_path)))
    assert made.parent == tmp_path and made.name.startswith(f"kiln-metrics-{os.getpid()}-")
    assert remove_stale_dirs(str(tmp_path)) == []  # this process is alive
    assert made.exists()


@pytest.mark.fault
@pytest.mark.slow
def test_serve_removes_a_killed_servers_metrics_folder_and_its_own_on_stop(
    trained: Trained, serve: Any, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = folder(tmp, f"kiln-metrics-{dead_pid()}-k9k9")
    live = folder(tmp, f"kiln-metrics-{os.getpid()}-live")
    home = trained.copy(tmp_path / "home")
    server = serve(home, workers=2, extra_env={"TMPDIR": str(tmp)})
    server.wait_ready()
    assert not dead.exists(), "the folder of a dead server is removed at start"
    assert live.exists(), "a live server's folder is kept"
    (own,) = tmp.glob(f"kiln-metrics-{server.proc.pid}-*")
    text = httpx.get(f"{server.url}/metrics").text
    assert "kiln_capture_backlog_rows" in text and "kiln_capture_backlog_bytes" in text
    assert server.stop() == 0
    assert not own.exists()
