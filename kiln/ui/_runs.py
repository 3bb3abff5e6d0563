"""Starting `kiln run` from the UI: a detached child process like the scheduler's (a session of
its own, the settings passed as ``KILN_*`` variables), and whether a pipeline's lock is held by a
live run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from kiln.registry.liveness import STALE_AFTER
from kiln.scheduler._child import child_env
from kiln.settings import Settings
from kiln.stores import Stores
from kiln.stores.metadata.locks import pid_alive
from kiln.stores.metadata.records import LockRecord

__all__ = ["SECRETS", "live_lock", "run_of", "spawn"]

SECRETS = ("KILN_ADMIN_TOKEN", "KILN_PREDICT_TOKEN", "KILN_TOKEN")
"""Never passed to a run the UI starts: a run imports the pipeline's own code (custom
estimators, features), which must not read the server's admin token."""


def live_lock(lock: LockRecord | None, now: datetime | None = None) -> bool:
    """Whether ``lock`` is held by a run that is alive (a fresh heartbeat, and its process is
    there when it ran on this host)."""
    if lock is None:
        return False
    if (now or datetime.now(UTC)) - lock.heartbeat_at > STALE_AFTER:
        return False
    return not (lock.host == os.uname().nodename and not pid_alive(lock.pid))


def spawn(settings: Settings, name: str, args: list[str], actor: str) -> tuple[int, Path]:
    """Start `kiln ARGS` detached (a session of its own, like the scheduler's child), its
    output in a log file under the home folder; returns its pid and the log's path.

    The child's ``LOGNAME`` and ``USER`` are ``actor``: the audit events that `kiln run` writes
    itself (register, the release's promote or block) name the person who started it, as they
    name the user who runs `kiln run` in a terminal. The server's tokens (``SECRETS``) are not
    passed on: a run needs none, and it runs code from the pipeline's folder."""
    logs = settings.home.resolve() / "ui-runs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    log = logs / f"{name}-{stamp}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kiln.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(settings, actor),
            start_new_session=True,
        )
    # Reap it when it ends (no zombie, no warning), without making the request wait for it.
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
    return process.pid, log


def _env(settings: Settings, actor: str) -> dict[str, str]:
    env = child_env(settings) | {"LOGNAME": actor, "USER": actor}
    for key in SECRETS:
        env.pop(key, None)
    return env


def run_of(stores: Stores, name: str, pid: int, wait: float) -> str | None:
    """The id of the run that process ``pid`` started, if it shows up within ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        with stores.metadata.read() as uow:
            for r in uow.runs.list(pipeline=name, limit=5):
                if r.pid == pid and r.host == os.uname().nodename:
                    return r.id
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)
