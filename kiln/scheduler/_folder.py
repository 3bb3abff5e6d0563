"""The pipelines of a folder: every kiln.yaml (or kiln.*.yaml) under it, re-read when it changes.

A scan is cheap when nothing changed (one stat per file); a file is parsed again only when its
times, size or inode changed. A file that does not load, or whose pipeline name another file
uses too, is refused with its error and the rest of the folder keeps working.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from kiln.config import LoadedConfig, load_config
from kiln.config.models import ScheduleConfig
from kiln.errors import ConfigError, KilnError

__all__ = ["Folder", "Pipeline", "Scan", "is_pipeline_file"]


def is_pipeline_file(name: str) -> bool:
    return name == "kiln.yaml" or fnmatch.fnmatchcase(name, "kiln.*.yaml")


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    path: Path
    loaded: LoadedConfig

    @property
    def schedule(self) -> ScheduleConfig | None:
        return self.loaded.config.schedule


@dataclass(frozen=True)
class Scan:
    """One look at the folder. ``problems`` maps each refused file to its error; ``changes``
    says what is new since the previous scan (to be logged once, not on every poll)."""

    scheduled: dict[str, Pipeline] = field(default_factory=dict)
    unscheduled: dict[str, Pipeline] = field(default_factory=dict)
    problems: dict[Path, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    new_problems: dict[Path, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Seen:
    stamp: tuple[int, ...]
    loaded: LoadedConfig | None
    error: str | None


class Folder:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._seen: dict[Path, _Seen] = {}
        self._problems: dict[Path, str] = {}
        self._pipelines: dict[str, tuple[Path, ScheduleConfig | None]] = {}

    def check(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(
                f"{self.root}: no such folder",
                hint="pass the folder that holds the pipelines' kiln.yaml files with --dir",
            )

    def scan(self) -> Scan:
        self.check()
        seen: dict[Path, _Seen] = {}
        for path in self._files():
            try:
                stat = path.stat()
            except OSError:
                continue  # removed between the listing and the stat
            stamp = (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)
            before = self._seen.get(path)
            seen[path] = before if before and before.stamp == stamp else _load(path, stamp)
        self._seen = seen
        return self._sort(seen)

    def _files(self) -> list[Path]:
        found: list[Path] = []
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            found += (Path(folder) / f for f in sorted(files) if is_pipeline_file(f))
        return found

    def _sort(self, seen: dict[Path, _Seen]) -> Scan:
        problems = {p: s.error for p, s in seen.items() if s.error is not None}
        by_name: dict[str, list[Pipeline]] = {}
        for path, entry in seen.items():
            if entry.loaded is not None:
                name = entry.loaded.config.name
                by_name.setdefault(name, []).append(Pipeline(name, path, entry.loaded))
        scan = Scan(problems=problems)
        for name, same in by_name.items():
            if len(same) > 1:
                listed = " and ".join(str(p.path) for p in same)
                for p in same:
                    problems[p.path] = (
                        f"{p.path}: pipeline {name!r} is defined by {len(same)} files ({listed});"
                        " all of them are refused until each pipeline has its own name"
                    )
                continue
            pipeline = same[0]
            target = scan.scheduled if pipeline.schedule is not None else scan.unscheduled
            target[name] = pipeline
        scan.new_problems.update((p, e) for p, e in problems.items() if self._problems.get(p) != e)
        self._problems = problems
        scan.changes.extend(self._changes(scan))
        return scan

    def _changes(self, scan: Scan) -> list[str]:
        now = {
            name: (p.path, p.schedule) for name, p in (scan.scheduled | scan.unscheduled).items()
        }
        lines: list[str] = []
        for name, (path, schedule) in sorted(now.items()):
            if self._pipelines.get(name) == (path, schedule):
                continue
            verb = "updated" if name in self._pipelines else "found"
            when = _describe(schedule) if schedule is not None else "unscheduled (no schedule:)"
            lines.append(f"{verb} pipeline {name!r} ({path}): {when}")
        lines += [
            f"pipeline {name!r} ({path}) is gone"
            for name, (path, _) in sorted(self._pipelines.items())
            if name not in now
        ]
        self._pipelines = now
        return lines


def _describe(schedule: ScheduleConfig) -> str:
    return f"cron {schedule.cron!r} in {schedule.timezone}, catchup {schedule.catchup}"


def _load(path: Path, stamp: tuple[int, ...]) -> _Seen:
    try:
        return _Seen(stamp, load_config(path), None)
    except KilnError as e:
        return _Seen(stamp, None, str(e))
