"""`kiln run` gating its version, `kiln gates show`, `kiln status` and `kiln watch`, as a user
runs them: real child processes on a real home."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kiln.config.loader import LoadedConfig

P = "flights-test"


def test_run_gates_blocks_and_status_shows_it(
    tmp_path: Path, make_config: Callable[..., LoadedConfig], cli: Callable[..., Any]
) -> None:
    env = {"KILN_HOME": str(tmp_path / ".kiln")}
    first = make_config("v1.yaml", deploy={"auto_promote": True})
    done = cli("run", str(first.path), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "promoted: gates passed; first version" in done.stdout
    assert "data_quality" in done.stdout and "passed" in done.stdout

    narrow = make_config(
        "v2.yaml",
        deploy={"auto_promote": True, "gates": {"data_quality": {"prediction_range": {"max": 0}}}},
    )
    done = cli("run", str(narrow.path), cwd=tmp_path, env=env)
    # A blocked version is an outcome, not an error: no error message, its own exit code.
    assert done.returncode == 10, done.stderr
    assert "error:" not in done.stderr and "Traceback" not in done.stderr
    assert "blocked: failed gates: data_quality:" in done.stdout
    assert "registered flights-test v2" in done.stdout
    assert f"kiln override {P} 2 --reason" in done.stdout

    shown = cli("gates", "show", P, "2", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "gates of flights-test v2 (blocked)" in shown.stdout
    assert "predictions outside [-inf, 0" in shown.stdout
    assert "data_quality.examples" in shown.stdout

    as_json = cli("gates", "show", P, "2", "--json", cwd=tmp_path, env=env)
    doc = json.loads(as_json.stdout)
    quality = next(g for g in doc["gates"] if g["gate"] == "data_quality")
    assert doc["stage"] == "blocked" and quality["status"] == "failed"
    assert quality["evidence"]["out_of_range"] > 0

    status = cli("status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    line = next(row for row in status.stdout.splitlines() if P in row)
    assert "v1" in line and "v2 blocked" in line and "failed: data_quality" in line
    assert "succeeded" in line  # the last run

    watched = cli("watch", "--once", cwd=tmp_path, env=env)
    assert watched.returncode == 0, watched.stderr
    assert "nothing to do" in watched.stdout

    missing = cli("gates", "show", P, "9", cwd=tmp_path, env=env)
    assert missing.returncode == 6 and "no version 9" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_gates_show_names_lost_fallback_and_inconclusive_segments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kiln.cli._release import _evidence

    _evidence(
        "champion_challenger",
        "failed",
        {
            "lost_segments": {"JFK": {"reason": "absent from the candidate's data"}},
            "inconclusive_segments": ["SFO"],
            "regressed_segments": [],
        },
    )
    _evidence("replay", "failed", {"fallback_segments": {"JFK": {"requests": 120}}})
    shown = capsys.readouterr().out
    assert "champion_challenger.lost_segments:" in shown and "absent from the candidate" in shown
    assert 'champion_challenger.inconclusive_segments: ["SFO"]' in shown
    assert 'replay.fallback_segments: {"JFK": {"requests": 120}}' in shown
