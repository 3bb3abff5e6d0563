"""One lock per pipeline, so that two runs of a pipeline never overlap.

Every step is a single statement guarded by a constraint, so two processes racing on
SQLite or PostgreSQL cannot both win: the INSERT is guarded by the primary key, and a
takeover is an UPDATE conditional on the holder and heartbeat that were judged stale.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kiln.errors import ConcurrentRunError
from kiln.stores.metadata import tables as t
from kiln.stores.metadata.base import Repository, now, to_record
from kiln.stores.metadata.records import LockRecord

__all__ = ["LockRepository"]

_ATTEMPTS = 5


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a checkable pid: rely on the heartbeat going stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _held(lock: LockRecord) -> ConcurrentRunError:
    return ConcurrentRunError(
        f"pipeline {lock.pipeline!r} is locked by run {lock.run_id!r} on host {lock.host}"
        f" (pid {lock.pid}) since {_when(lock.acquired_at)},"
        f" last heartbeat {_when(lock.heartbeat_at)}",
        hint=f"wait for it to finish, or resume it with `kiln run --resume {lock.run_id}`",
    )


class LockRepository(Repository):
    _table = t.table_of(t.PipelineLock)

    def get(self, pipeline: str) -> LockRecord | None:
        row = self._session.execute(
            sa.select(self._table).where(self._table.c.pipeline == pipeline)
        ).first()
        return None if row is None else to_record(LockRecord, row)

    def acquire(
        self, pipeline: str, run_id: str, host: str, pid: int, stale_after: timedelta
    ) -> str | None:
        """Take the pipeline's lock for ``run_id``, or raise ConcurrentRunError.

        A lock whose heartbeat is older than ``stale_after``, or whose holder was a process on
        this host that is gone, is taken over; the holder's run id is returned so that the
        caller can mark that run interrupted (None when there was no holder to take over from,
        or when the holder was the same run).
        """
        c = self._table.c
        held: LockRecord | None = None
        for _ in range(_ATTEMPTS):
            stamp = now()
            mine = {"run_id": run_id, "host": host, "pid": pid}
            try:
                # A savepoint, so that a duplicate key does not abort a PostgreSQL transaction.
                with self._session.begin_nested():
                    self._session.execute(
                        sa.insert(self._table).values(
                            pipeline=pipeline, **mine, acquired_at=stamp, heartbeat_at=stamp
                        )
                    )
                return None
            except sa_exc.IntegrityError:
                pass
            held = self.get(pipeline)
            if held is None:
                continue  # released between our INSERT and our SELECT: try again
            same_holder = (held.run_id, held.host, held.pid) == (run_id, host, pid)
            stale = stamp - held.heartbeat_at > stale_after
            dead = held.host == host and not pid_alive(held.pid)
            if not (same_holder or stale or dead):
                raise _held(held)
            result = self._session.execute(
                sa.update(self._table)
                .where(
                    c.pipeline == pipeline,
                    c.run_id == held.run_id,
                    c.heartbeat_at == held.heartbeat_at,
                )
                .values(**mine, acquired_at=stamp, heartbeat_at=stamp)
            )
            if cast(sa.CursorResult[Any], result).rowcount == 1:
                return None if held.run_id == run_id else held.run_id
        if held is None:
            raise ConcurrentRunError(f"could not lock pipeline {pipeline!r}: too much contention")
        raise _held(held)

    def heartbeat(self, pipeline: str, run_id: str) -> None:
        """Prove the run is alive; raises ConcurrentRunError if another run took the lock."""
        c = self._table.c
        result = self._session.execute(
            sa.update(self._table)
            .where(c.pipeline == pipeline, c.run_id == run_id)
            .values(heartbeat_at=now())
        )
        if cast(sa.CursorResult[Any], result).rowcount != 1:
            raise ConcurrentRunError(
                f"run {run_id!r} no longer holds the lock of pipeline {pipeline!r}",
                hint="another run took it over after this run's heartbeat went stale;"
                " stop this run and check `kiln runs list`",
            )

    def release(self, pipeline: str, run_id: str) -> bool:
        """Release the lock if ``run_id`` holds it; returns whether it did."""
        c = self._table.c
        result = self._session.execute(
            sa.delete(self._table).where(c.pipeline == pipeline, c.run_id == run_id)
        )
        return cast(sa.CursorResult[Any], result).rowcount == 1
