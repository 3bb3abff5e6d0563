"""The folder scan: which files are pipelines, and what is refused, reported once per change."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.errors import ConfigError
from kiln.scheduler import Folder

NIGHTLY = {"schedule": {"cron": "0 3 * * *", "timezone": "Europe/Paris"}}


def touch_later(path: Path) -> None:
    """Change a file's modification time, as an edit that keeps its size would."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_finds_every_kiln_yaml_recursively(
    add_pipeline: Callable[..., Path], pipelines: Path
) -> None:
    add_pipeline("flights/kiln.yaml", "flights", **NIGHTLY)
    add_pipeline("team/weather/kiln.weather.yaml", "weather", **NIGHTLY)
    add_pipeline("kiln.adhoc.yaml", "adhoc")  # no schedule
    add_pipeline("team/other.yaml", "other", **NIGHTLY)  # not a pipeline file name
    add_pipeline(".hidden/kiln.yaml", "hidden", **NIGHTLY)  # hidden folders are skipped
    scan = Folder(pipelines).scan()
    assert sorted(scan.scheduled) == ["flights", "weather"]
    assert list(scan.unscheduled) == ["adhoc"]
    assert scan.scheduled["weather"].path == pipelines / "team/weather/kiln.weather.yaml"
    assert scan.problems == {}
    assert any("found pipeline 'adhoc'" in c and "unscheduled" in c for c in scan.changes)
    assert any("'flights'" in c and "cron '0 3 * * *' in Europe/Paris" in c for c in scan.changes)


def test_a_bad_file_is_refused_once_per_change_and_the_others_keep_working(
    add_pipeline: Callable[..., Path], pipelines: Path
) -> None:
    add_pipeline("good/kiln.yaml", "good", **NIGHTLY)
    bad = pipelines / "bad" / "kiln.yaml"
    bad.parent.mkdir()
    bad.write_text("name: bad\nowner: me\nschedule: {cron: '61 * * * *'}\n")
    folder = Folder(pipelines)

    first = folder.scan()
    assert list(first.scheduled) == ["good"]
    assert f"{bad}:3:" in first.problems[bad] and "not a cron expression" in first.problems[bad]
    assert first.new_problems == first.problems
    again = folder.scan()
    assert again.problems == first.problems and again.new_problems == {} and again.changes == []

    bad.write_text("name: bad\nowner: me\nschedule: [\n")  # edited, still broken: reported again
    edited = folder.scan()
    assert "not valid YAML" in edited.new_problems[bad]

    add_pipeline("bad/kiln.yaml", "bad", **NIGHTLY)  # fixed: picked up without a restart
    fixed = folder.scan()
    assert sorted(fixed.scheduled) == ["bad", "good"] and fixed.problems == {}
    assert any("found pipeline 'bad'" in c for c in fixed.changes)


def test_two_files_with_one_pipeline_name_are_both_refused(
    add_pipeline: Callable[..., Path], pipelines: Path
) -> None:
    one = add_pipeline("a/kiln.yaml", "flights", **NIGHTLY)
    two = add_pipeline("b/kiln.yaml", "flights", **NIGHTLY)
    folder = Folder(pipelines)
    scan = folder.scan()
    assert scan.scheduled == {} and set(scan.problems) == {one, two}
    for problem in scan.problems.values():
        assert str(one) in problem and str(two) in problem and "'flights'" in problem
    two.unlink()
    assert list(folder.scan().scheduled) == ["flights"]


def test_a_changed_schedule_is_picked_up(
    add_pipeline: Callable[..., Path], pipelines: Path
) -> None:
    path = add_pipeline("kiln.yaml", "flights", **NIGHTLY)
    folder = Folder(pipelines)
    assert folder.scan().scheduled["flights"].schedule.cron == "0 3 * * *"  # type: ignore[union-attr]
    path.write_text(path.read_text().replace("0 3 * * *", "0 4 * * *"))
    touch_later(path)
    scan = folder.scan()
    assert scan.scheduled["flights"].schedule.cron == "0 4 * * *"  # type: ignore[union-attr]
    assert any("updated pipeline 'flights'" in c for c in scan.changes)
    path.unlink()
    gone = folder.scan()
    assert gone.scheduled == {} and any("'flights'" in c and "gone" in c for c in gone.changes)


def test_a_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such folder") as caught:
        Folder(tmp_path / "nope").scan()
    assert "--dir" in str(caught.value)
