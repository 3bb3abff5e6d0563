"""The scheduler loop: scan the folder, claim what is due, run it, retry it, heartbeat it.

Every decision that two schedulers could both take is settled in the database: a firing is
claimed by inserting its (pipeline, due_at) row, a retry or a takeover by a conditional
update (kiln/stores/metadata/fires.py; the claiming is :class:`~._claims.Claims`). The
pipeline's run lock (taken by `kiln run`) is the second line: two runs of one pipeline never
overlap, whoever started them.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from kiln.errors import EXIT_BLOCKED, KilnError, StoreError
from kiln.runs.reporting import host_and_pid
from kiln.scheduler._child import Attempt, child_env, explain_exit
from kiln.scheduler._claims import STALE_AFTER, Outcome, utcnow, when
from kiln.scheduler._folder import Folder, Pipeline, Scan
from kiln.scheduler._summary import PipelinePass, pipeline_pass
from kiln.scheduler._tick import HEARTBEAT_SECONDS, Ticks
from kiln.settings import Settings
from kiln.stores import Stores, open_stores
from kiln.stores.metadata.records import FireRecord, FireStatus
from kiln.stores.metadata.store import UnitOfWork

__all__ = ["HEARTBEAT_SECONDS", "STALE_AFTER", "Outcome", "Scheduler", "Summary"]

log = logging.getLogger("kiln.scheduler")

KILL_AFTER_SECONDS = 30.0
_WAKE_SECONDS = 0.5  # how often a scheduler with runs in flight looks at them
_RECORD_SECONDS = 10.0  # how long a stopping scheduler tries to record its runs' ends


@dataclass
class Summary:
    """What one pass of ``run_once`` saw and did."""

    scheduled: list[str] = field(default_factory=list)
    unscheduled: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    pipelines: list[PipelinePass] = field(default_factory=list)
    """Per scheduled pipeline: what ran, what was skipped or waits for a retry, when next."""


class Scheduler(Ticks):
    """Runs every scheduled kiln.yaml under ``folder`` on its cron, one run per pipeline at a
    time and at most ``max_runs`` runs at once; a failed run is retried ``retries`` times,
    after ``retry_delay * 2**(attempt - 1)`` seconds.

    ``after_tick(pipeline)`` is called once per pass for every pipeline of the folder,
    scheduled or not (the release tick and the monitor hook in there), and then the
    retraining an open alert asks for is started (:mod:`._tick`); what it raises is logged
    and the loop goes on. ``clock`` is
    the time the cron schedules are read against.
    """

    def __init__(
        self,
        settings: Settings,
        folder: Path,
        *,
        poll_seconds: float = 10,
        max_runs: int = 1,
        retries: int = 2,
        retry_delay: float = 60,
        after_tick: Callable[[str], object] | None = None,
        clock: Callable[[], datetime] = utcnow,
        stores: Stores | None = None,
    ) -> None:
        if poll_seconds <= 0 or max_runs < 1 or retries < 0 or retry_delay < 0:
            raise ValueError(
                "need poll_seconds > 0, max_runs >= 1, retries >= 0 and retry_delay >= 0"
            )
        self.settings = settings
        self.folder = Folder(folder)
        self.poll_seconds = poll_seconds
        self.max_runs = max_runs
        self.retries = retries
        self.retry_delay = retry_delay
        self.after_tick = after_tick
        self.clock = clock
        host, pid = host_and_pid()
        self.name = f"{host}:{pid}"
        self._host, self._pid = host, pid
        self._given_stores = stores
        self._stores: Stores | None = stores
        self._attempts: dict[int, Attempt] = {}
        self._first_seen: dict[str, datetime] = {}
        self._once = False
        self._pending: set[int] = set()  # firings run_once left waiting for a retry
        self._outcomes: list[Outcome] = []
        self._refusals: dict[str, str] = {}
        self.heartbeat_seconds = HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._signals = 0
        self._logs: Path | None = None

    # -- entry points -------------------------------------------------------------------------
    def run_forever(self) -> None:
        """Poll until SIGTERM or SIGINT; then stop the runs in flight and mark them for a
        retry."""
        self.folder.check()
        self._once = False
        with self._running():
            log.info(
                "scheduler %s watching %s (poll %ss, at most %d run(s) at once)",
                self.name, self.folder.root, self.poll_seconds, self.max_runs,
            )  # fmt: skip
            next_pass = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_pass:
                    scan = self._guarded(self._pass)
                    if scan is not None and not self._stop.is_set():
                        self._tick(scan)
                    next_pass = time.monotonic() + self.poll_seconds
                else:
                    self._guarded(self._attend)
                wait = next_pass - time.monotonic()
                self._stop.wait(min(wait, _WAKE_SECONDS) if self._attempts else wait)
            self._shutdown()

    def run_once(self) -> Summary:
        """One pass: scan, claim what is due, run it to completion (retries included), call
        ``after_tick``, and say what happened."""
        self._once = True
        with self._running():
            scan = self._pass()
            while not self._stop.is_set() and (self._attempts or self._waiting()):
                self._stop.wait(_WAKE_SECONDS)
                self._guarded(lambda: self._pass(scan, only=self._pending))
            self._shutdown()
            if not self._stop.is_set():
                self._tick(scan)
                while not self._stop.is_set() and self._attempts:  # retrainings it started
                    self._stop.wait(_WAKE_SECONDS)
                    self._guarded(self._attend)
                self._shutdown()
            return Summary(
                scheduled=sorted(scan.scheduled),
                unscheduled=sorted(scan.unscheduled),
                problems={str(p): e for p, e in sorted(scan.problems.items())},
                outcomes=list(self._outcomes),
                pipelines=self._guarded(lambda: self._passes(scan)) or [],
            )

    def _passes(self, scan: Scan) -> list[PipelinePass]:
        now = self.clock()
        found = []
        for name in sorted(scan.scheduled):
            with self._uow() as uow:
                last_due = uow.fires.last_due(name)
            one = pipeline_pass(
                scan.scheduled[name], self._outcomes, now=now, last_due=last_due,
                first_seen=self._first_seen.get(name, now),
            )  # fmt: skip
            if one is not None:
                found.append(one)
        return found

    def stop(self) -> None:
        """Stop claiming; the loop stops the runs in flight and returns (thread-safe)."""
        self._stop.set()

    # -- set-up and tear-down -------------------------------------------------------------------
    @contextmanager
    def _running(self) -> Iterator[None]:
        self._stop.clear()
        self._signals = 0
        self._outcomes = []
        self._pending = set()
        if self._stores is None:
            self._stores = open_stores(self.settings)
        self._logs = Path(tempfile.mkdtemp(prefix="kiln-scheduler-"))
        previous = self._install_signals()
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for attempt in self._attempts.values():  # only after an unexpected error
                attempt.terminate()
                attempt.close()
            self._attempts.clear()
            shutil.rmtree(self._logs, ignore_errors=True)
            if self._given_stores is None and self._stores is not None:
                self._stores.close()
                self._stores = None

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        self._stop.set()

    def _shutdown(self) -> None:
        if self._stop.is_set():
            log.info(
                "stopping: %d run(s) in flight are stopped and retried later", len(self._attempts)
            )
        if not self._attempts:
            return
        for attempt in self._attempts.values():
            attempt.terminate()
        unrecorded_since: float | None = None
        while self._attempts:
            for attempt in self._attempts.values():
                if self._signals > 1:
                    attempt.terminate()  # a second signal: kill now
                attempt.kill_if_overdue(KILL_AFTER_SECONDS)
            self._guarded(self._attend)
            if self._attempts and all(a.poll() is not None for a in self._attempts.values()):
                unrecorded_since = unrecorded_since or time.monotonic()
                if time.monotonic() - unrecorded_since > _RECORD_SECONDS:
                    log.error(
                        "could not record how %d run(s) ended; their firings are taken over"
                        " by a scheduler once their heartbeats are stale",
                        len(self._attempts),
                    )
                    return
            time.sleep(0.1)

    # -- one pass ---------------------------------------------------------------------------------
    def _pass(self, scan: Scan | None = None, only: set[int] | None = None) -> Scan:
        """Scan the folder (unless ``scan`` is given), look after the runs in flight, and claim
        what is due; with ``only``, claim nothing but the retries of those firings."""
        if scan is None:
            scan = self.folder.scan()
            self._report(scan)
        self._attend()
        if not self._stop.is_set():
            self._claim(scan, only)
        return scan

    def _report(self, scan: Scan) -> None:
        for line in scan.changes:
            log.info("%s", line)
        for error in scan.new_problems.values():
            log.error("refused: %s", error)
        stamp = self.clock()
        for name in scan.scheduled:
            self._first_seen.setdefault(name, stamp)

    def _guarded(self, step: Callable[[], Any]) -> Any:
        """Run ``step``; an error (the database is away, the folder was removed) is logged and
        the loop goes on: the next pass tries again."""
        try:
            return step()
        except KilnError as e:
            log.error("%s", e)
            return None

    # -- the runs in flight -----------------------------------------------------------------------
    def _attend(self) -> None:
        for fire_id, attempt in list(self._attempts.items()):
            code = attempt.poll()
            if code is not None:
                self._finish(attempt, code)
                attempt.close()
                del self._attempts[fire_id]
            elif time.monotonic() - attempt.beat_at >= self.heartbeat_seconds:
                attempt.beat_at = time.monotonic()
                with self._uow() as uow:
                    mine = uow.fires.heartbeat(fire_id, self.name)
                if not mine and attempt.terminated_at is None:
                    log.warning(
                        "firing of %r due %s was taken over by another scheduler (this one"
                        " missed its heartbeats); stopping its run here",
                        attempt.pipeline, when(attempt.fire.due_at),
                    )  # fmt: skip
                    attempt.terminate()

    def _finish(self, attempt: Attempt, code: int) -> None:
        fire = attempt.fire
        run_id = self._run_of(attempt)
        error: str | None = None
        delay: timedelta | None = None  # until the retry
        interrupted = code != 0 and attempt.terminated_at is not None and self._stop.is_set()
        if code == 0:
            status: FireStatus = "succeeded"
        elif code == EXIT_BLOCKED:  # an outcome of the run, not a failure: never retried
            status = "blocked"
            error = f"{attempt.summary_line()}; {explain_exit(code)}".lstrip("; ")
        elif interrupted:
            status, delay = "retrying", timedelta(0)
            error = "interrupted: the scheduler stopped; the firing is run again"
        else:
            error = f"kiln run {attempt.path}: {explain_exit(code)}\n{attempt.error()}".strip()
            if fire.attempt <= self.retries:
                status, delay = "retrying", self._backoff(fire.attempt)
            else:
                status = "failed"
        retry_at = None if delay is None else self.clock() + delay
        with self._uow() as uow:
            done = uow.fires.finish(fire.id, status, run_id, error, retry_at, scheduler=self.name)
        if done is None:
            log.warning(
                "attempt %d of %r due %s ended (%s), but another scheduler holds the firing now",
                fire.attempt, fire.pipeline, when(fire.due_at), explain_exit(code),
            )  # fmt: skip
            return
        self._outcomes.append(
            Outcome(fire.pipeline, fire.due_at, fire.attempt, status, run_id, error)
        )
        self._pending.discard(fire.id)
        where = f"{fire.pipeline!r} due {when(fire.due_at)}, attempt {fire.attempt}"
        indented = (error or "").replace("\n", "\n  ")
        if status == "succeeded":
            log.info("succeeded %s: %s", where, attempt.summary_line() or f"run {run_id}")
        elif status == "blocked":
            log.warning("blocked %s: %s (not retried)", where, error)
        elif interrupted:
            log.info(
                "stopped %s (%s); it is run again by the next scheduler", where, explain_exit(code)
            )
        elif retry_at is not None and delay is not None:
            if self._once:
                self._pending.add(fire.id)
            log.warning(
                "failed %s (%s); retry in %gs, at %s\n  %s",
                where, explain_exit(code), delay.total_seconds(), when(retry_at), indented,
            )  # fmt: skip
        else:
            log.error(
                "failed %s (%s); no retries left: the firing failed\n  %s",
                where, explain_exit(code), indented,
            )  # fmt: skip

    def _run_of(self, attempt: Attempt) -> str | None:
        """The run that the attempt's `kiln run` created: it recorded this host and its pid."""
        try:
            with self._uow() as uow:
                runs = uow.runs.list(attempt.pipeline, limit=20)
        except KilnError:
            return None
        since = attempt.fire.claimed_at - timedelta(seconds=5)
        for run in runs:
            if (run.host, run.pid) == (self._host, attempt.process.pid) and run.started_at >= since:
                return run.id
        return None

    def _waiting(self) -> bool:
        """Whether a firing this scheduler left for a retry still waits for it (run_once)."""
        if self._pending:
            with self._uow() as uow:
                fires = [uow.fires.get(fire_id) for fire_id in self._pending]
            self._pending = {f.id for f in fires if f.status == "retrying"}
        return bool(self._pending)

    def _start(self, fire: FireRecord, pipeline: Pipeline) -> None:
        logs = self._logs or Path(tempfile.gettempdir())
        try:
            args = fire.run_args()  # kept on the firing: a retry runs the same command
            attempt = Attempt.start(fire, pipeline.path, child_env(self.settings), logs, args)
        except OSError as e:
            with self._uow() as uow:
                uow.fires.finish(
                    fire.id, "failed", None, f"could not start kiln run: {e}", scheduler=self.name
                )
            log.error("could not start `kiln run %s`: %s", pipeline.path, e)
            return
        self._attempts[fire.id] = attempt
        log.info(
            "started %r due %s, attempt %d: kiln run %s %s (pid %d)",
            fire.pipeline, when(fire.due_at), fire.attempt, pipeline.path, " ".join(args),
            attempt.process.pid,
        )  # fmt: skip

    @contextmanager
    def _uow(self) -> Iterator[UnitOfWork]:
        if self._stores is None:
            raise StoreError("the scheduler is not running")
        metadata = self._stores.metadata
        problem = metadata.replaced()
        if problem is not None and metadata.path is not None and metadata.path.exists():
            metadata.reopen()  # another Kiln database was put at the path: follow it
            log.warning("%s: reopened it, following the file now at that path", problem)
        with metadata.unit_of_work() as uow:  # a missing file: a StoreError naming it
            yield uow
