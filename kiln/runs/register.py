"""The last two steps of a run: register its version (one transaction: nothing half-registered),
then release it (gate it, then promote, canary, shadow or block it as its ``deploy:`` policy says).

The gates live above this layer, so the caller (the CLI, the scheduler's `kiln run`) hands the
runner a :data:`Releaser`; without one the step is recorded ``skipped`` and the version stays a
candidate on purpose (``kiln run --skip-gates``, a library call). The run is finished, and its
pipeline lock released, only once this step is recorded: a run killed between registering and
releasing is still a run to resume, and ``kiln run --resume`` does just this step.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kiln.errors import KilnError
from kiln.runs.packaging import fallback_warnings
from kiln.runs.reporting import Reporter
from kiln.runs.result import RunResult
from kiln.runs.steps import Heartbeat, actor, finish_run, interruption, jsonable, step
from kiln.stores import Stores
from kiln.stores.metadata.records import RunRecord, RunStatus

__all__ = ["Releaser", "register_step", "registered_result", "release_only", "release_step"]

Releaser = Callable[[RunResult], dict[str, Any]]
"""Releases a registered version; returns what to record with the step (``outcome`` first)."""

NOT_RELEASED = (
    "not gated by the run (kiln run --skip-gates, or a Runner without a releaser):"
    " `kiln gates check` gates it, `kiln promote` deploys it"
)


def register_step(
    stores: Stores,
    reporter: Reporter,
    pipeline: str,
    run_id: str,
    *,
    digest: str,
    manifest: dict[str, Any],
) -> int:
    """Register the packed version with its lineage; the run stays ``running`` (and holds its
    lock) until its release is recorded."""
    with step(stores, reporter, run_id, "register") as m:
        with stores.metadata.unit_of_work() as uow:
            version = uow.versions.register(
                pipeline, run_id, digest, manifest["metrics"], manifest["lineage"]
            )
            uow.runs.update(run_id, model_version=version.version)  # finished by release
            details: dict[str, Any] = {"run_id": run_id, "manifest": digest}
            if (same_as := manifest["lineage"].get("unchanged_from")) is not None:
                details["unchanged_from"] = same_as  # registered as a candidate only
            uow.audit.record(
                actor(), "register", pipeline, version=version.version, details=details
            )
        m.details["version"] = version.version
    return version.version


def release_step(
    stores: Stores, reporter: Reporter, result: RunResult, release: Releaser | None
) -> RunResult:
    """Record the release of ``result``'s version as the step ``release``, then finish the run."""
    run_id, pipeline = result.run_id, result.pipeline
    with stores.metadata.unit_of_work() as uow:
        # Still this run's lock? A watcher that judged it dead (a stale heartbeat) may have
        # taken it to release the version itself: then this run must not release it too.
        uow.locks.heartbeat(pipeline, run_id)
    if release is None:
        with stores.metadata.unit_of_work() as uow:
            uow.steps.start(run_id, "release")
            uow.steps.finish(
                run_id, "release", "skipped", wall_seconds=0.0, cpu_seconds=0.0,
                peak_memory_bytes=0, details={"reason": NOT_RELEASED},
            )  # fmt: skip
        reporter.step("release", "skipped", "not gated (--skip-gates)")
        released = {"outcome": "skipped"}
    else:
        with step(stores, reporter, run_id, "release") as m:
            released = jsonable(release(result))
            m.details |= released
    with stores.metadata.unit_of_work() as uow:
        uow.runs.mark_finished(run_id, "succeeded", model_version=result.version)
        uow.locks.release(pipeline, run_id)
    return replace(result, released=released)


def registered_result(stores: Stores, run: RunRecord) -> RunResult | None:
    """What ``run`` registered, read back from the registry (None: nothing yet), for a resume
    that has only the release left to do."""
    with stores.metadata.unit_of_work() as uow:
        version = uow.versions.for_run(run.id)
        steps = {s.name: s for s in uow.steps.for_run(run.id)}
    if version is None:
        return None
    manifest = json.loads(
        stores.content.get(
            version.manifest_digest, what=f"the manifest of {run.pipeline} v{version.version}"
        )
    )
    lineage = manifest.get("lineage", {})
    train = steps.get("train")
    return RunResult(
        run.id, run.pipeline, version.version, version.manifest_digest, manifest,
        reused_tasks=int((train.details or {}).get("reused", 0)) if train else 0,
        warnings=fallback_warnings(manifest),
        experiment=lineage.get("experiment"), partial=lineage.get("partial"),
        unchanged_from=lineage.get("unchanged_from"),
    )  # fmt: skip


def release_only(
    stores: Stores,
    reporter: Reporter,
    run: RunRecord,
    release: Releaser | None,
    interrupted: threading.Event,
) -> RunResult | None:
    """For a resumed run that was killed after registering its version: the release step
    alone (None: the run registered nothing, it resumes from its first unfinished step)."""
    heartbeat = Heartbeat(stores, run.pipeline, run.id)
    heartbeat.start()
    try:
        registered = registered_result(stores, run)
        if registered is None:
            return None
        for name in ("extract", "check", "train", "package", "register"):
            reporter.step(name, "skipped", "done before the interruption")
        return release_step(stores, reporter, registered, release)
    except BaseException as e:
        status: RunStatus = "interrupted" if interrupted.is_set() or interruption(e) else "failed"
        text = str(e) if isinstance(e, KilnError) else f"{type(e).__name__}: {e}"
        finish_run(stores, run.pipeline, run.id, status, text)
        raise
    finally:
        heartbeat.stop()
