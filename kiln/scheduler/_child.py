"""One attempt of a firing: `kiln run CONFIG` in a child process.

A child process isolates the scheduler from a run that crashes or leaks, and can be stopped:
SIGTERM makes `kiln run` mark its run interrupted and exit; SIGKILL of its process group (the
child leads a session of its own) takes its training workers down with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kiln.errors import EXIT_BLOCKED
from kiln.settings import Settings, settings_env
from kiln.stores.metadata.records import FireRecord

__all__ = ["Attempt", "child_env", "explain_exit"]

_TAIL_LINES = 20
_TAIL_CHARS = 4000
_EXITS = {
    2: "its config is invalid",
    3: "its data cannot be used",
    4: "training failed",
    5: "an artifact failed its integrity check",
    7: "the store failed, or another run of the pipeline holds its lock",
    EXIT_BLOCKED: "its version was registered but blocked by its gates",
    130: "it was interrupted",
}


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment with the scheduler's settings as ``KILN_*`` variables, so
    that a child `kiln run` uses the same stores whether they came from flags or variables."""
    env = dict(os.environ)
    for key, value in settings_env(settings).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def explain_exit(code: int) -> str:
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}" + (f": {_EXITS[code]}" if code in _EXITS else "")


@dataclass
class Attempt:
    """A running (or just ended) `kiln run` of one firing held by this scheduler."""

    fire: FireRecord
    path: Path
    process: subprocess.Popen[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]
    beat_at: float = field(default_factory=time.monotonic)
    terminated_at: float | None = None
    code: int | None = None

    @classmethod
    def start(
        cls,
        fire: FireRecord,
        path: Path,
        env: dict[str, str],
        logs: Path,
        args: tuple[str, ...] = ("--trigger", "schedule"),
    ) -> Attempt:
        """Start `kiln run PATH` with ``args`` (a cron firing: ``--trigger schedule``)."""
        stem = f"fire-{fire.id}-attempt-{fire.attempt}"
        stdout = (logs / f"{stem}.out").open("wb")
        stderr = (logs / f"{stem}.err").open("wb")
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "kiln.cli", "run", str(path), *args],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                start_new_session=True,
            )
        except OSError:
            stdout.close()
            stderr.close()
            raise
        return cls(fire=fire, path=path, process=process, stdout=stdout, stderr=stderr)

    @property
    def pipeline(self) -> str:
        return self.fire.pipeline

    def poll(self) -> int | None:
        if self.code is None:
            self.code = self.process.poll()
        return self.code

    def terminate(self) -> None:
        """Ask `kiln run` to stop (it marks its run interrupted); a second call, or one after
        ``grace`` seconds, kills the whole process group."""
        if self.poll() is not None:
            return
        if self.terminated_at is None:
            self.terminated_at = time.monotonic()
            self._signal(self.process.pid, signal.SIGTERM, group=False)
        else:
            self._signal(self.process.pid, signal.SIGKILL, group=True)

    def kill_if_overdue(self, grace: float) -> None:
        if self.terminated_at is not None and time.monotonic() - self.terminated_at > grace:
            self.terminate()

    @staticmethod
    def _signal(pid: int, signum: signal.Signals, *, group: bool) -> None:
        try:
            if group:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            pass  # it ended meanwhile

    def error(self) -> str:
        """What went wrong, from the end of the child's stderr: from its last ``error:`` line
        (the CLI's message and hint) or else its last lines."""
        text = _tail(self.stderr)
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
        kept = lines[starts[-1] :] if starts else lines[-_TAIL_LINES:]
        return "\n".join(kept)[-_TAIL_CHARS:]

    def summary_line(self) -> str:
        """What `kiln run` registered (its ``registered ...`` line), or its last line."""
        lines = [line.strip() for line in _tail(self.stdout).splitlines() if line.strip()]
        registered = [line for line in lines if line.startswith("registered ")]
        return (registered or lines or [""])[-1]

    def close(self) -> None:
        for stream in (self.stdout, self.stderr):
            stream.close()
            Path(stream.name).unlink(missing_ok=True)


def _tail(stream: IO[bytes]) -> str:
    """The end of a child's output file, read through a handle of its own (the child shares
    the offset of ``stream``)."""
    with Path(stream.name).open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 4 * _TAIL_CHARS))
        return f.read().decode("utf-8", errors="replace")
