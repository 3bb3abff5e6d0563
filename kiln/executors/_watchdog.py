"""A local worker exits when the process that owns its executor dies, even by kill -9.

Nothing else would stop it. With ``forkserver`` a worker's parent is the fork server, not the
owner, so neither a parent-death signal nor ``os.getppid()`` sees the owner go. The worker
blocks on the pool's call queue, whose write end its sibling workers hold too, so it never
reads end-of-file; the fork server waits for all its clients (the workers hold its "alive"
pipe) and multiprocessing's resource tracker for all its writers. So each worker watches the
owner itself, from a daemon thread started first thing in the worker:

- Linux >= 5.3: a pidfd of the owner, which becomes readable the moment the owner exits
  (zombie or reaped); the thread blocks in ``select`` and costs nothing until then.
- elsewhere (macOS): ``kill(owner, 0)`` and ``getppid()`` every :data:`POLL_SECONDS`.

Once the workers are gone, the fork server and the resource tracker read end-of-file and
exit by themselves. The worker exits with ``os._exit`` even inside a task: its result could
not be delivered anyway, and it writes no artifact (results go back to the owner, which
writes them atomically), so nothing is left half-written. The thread needs the GIL to exit:
a task stuck in native code that holds it (rare: numpy, LightGBM and ctypes release it) ends
the worker only once it lets go.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time

__all__ = ["EXIT_CODE", "POLL_SECONDS", "exit_with_owner", "wait_for_exit"]

POLL_SECONDS = 0.5
"""How often the portable fallback checks the owner (Linux needs no polling)."""
EXIT_CODE = 70
"""Exit status of a worker that stopped because its owner died (EX_SOFTWARE)."""


def exit_with_owner(owner: int) -> bool:
    """Start the thread that ends this process when ``owner`` exits; False if ``owner`` is us."""
    if owner == os.getpid():
        return False
    thread = threading.Thread(
        target=_watch, args=(owner, os.getppid()), name="kiln-owner-watchdog", daemon=True
    )
    thread.start()
    return True


def _watch(owner: int, parent: int) -> None:
    wait_for_exit(owner, parent)
    os._exit(EXIT_CODE)


def wait_for_exit(pid: int, parent: int | None = None) -> None:
    """Return once process ``pid`` has exited.

    Polling cannot tell a zombie from a live process; when ``pid`` is ``parent`` (our parent
    when we started), a change of ``os.getppid()`` tells instead.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            fd = pidfd_open(pid)
        except ProcessLookupError:
            return  # gone already
        except OSError:
            pass  # a kernel without pidfd (< 5.3) or a seccomp filter: poll instead
        else:
            try:
                while not select.select([fd], [], [])[0]:
                    pass
            finally:
                os.close(fd)
            return
    our_parent = parent == pid  # spawn: the owner is our parent, a new parent means it died
    while _alive(pid) and not (our_parent and os.getppid() != parent):
        time.sleep(POLL_SECONDS)


def _alive(pid: int) -> bool:
    with contextlib.suppress(PermissionError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
    return True
