"""The monitor pass: every closed window of a pipeline's production and canary captures, judged
against each serving version's training reference, stored once, and handed to alerts.

Windows are aligned to multiples of ``monitor.window`` since the Unix epoch (UTC) and taken by
the captures' event time (a caller's ``X-Kiln-Event-Time``, else the serving time), closed ones
only (``end <= now``). A pass starts after the last stored window (or at ``since``, or at the
first capture) and computes at most :data:`MAX_WINDOWS`; the next pass goes on from there.

Per window: drift (:mod:`kiln.monitoring.drift`), live performance on delayed labels
(:mod:`kiln.monitoring.performance`), latency and errors (:mod:`kiln.monitoring.latency`), all
aggregated in DuckDB over the window's Parquet files; then findings (:mod:`.judge`), the stored
:class:`WindowResult` and the alert episodes (:mod:`kiln.monitoring.alerts`), in one transaction.
A window is never recomputed, except its live performance when labels arrived after it was
computed (the row is updated, not duplicated). Only the manifests of the versions are read,
never their pickled models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from kiln.config.models import PipelineConfig
from kiln.errors import IntegrityError
from kiln.monitoring.alerts import AlertChange, update_alerts
from kiln.monitoring.drift import no_reference_note, window_drift
from kiln.monitoring.findings import Finding, WindowResult
from kiln.monitoring.judge import (
    alert_findings,
    drift_findings,
    latency_findings,
    performance_findings,
    worst_per_check,
)
from kiln.monitoring.latency import window_latency
from kiln.monitoring.notify import DeliveryReport, channel_key, deliver_due
from kiln.monitoring.performance import unknown_labels, window_performance
from kiln.settings import Settings
from kiln.stores import Stores
from kiln.stores.capture import CaptureWindow, open_window
from kiln.stores.labels import LabelStore
from kiln.stores.metadata.store import UnitOfWork

__all__ = ["MAX_WINDOWS", "Monitor", "MonitorPass", "align"]

log = logging.getLogger("kiln.monitor")

MAX_WINDOWS = 400
"""Windows computed per pass at most (a first pass over a year of hourly windows would take
long); the next pass continues where this one stopped."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def align(moment: datetime, length: timedelta) -> datetime:
    """The start of the window of ``length`` that holds ``moment`` (multiples since the epoch)."""
    seconds = int(length.total_seconds())
    offset = int((moment.astimezone(UTC) - EPOCH).total_seconds()) // seconds * seconds
    return EPOCH + timedelta(seconds=offset)


@dataclass
class MonitorPass:
    """What one :meth:`Monitor.run` did besides its window results."""

    computed: int = 0
    recomputed: int = 0
    already_stored: int = 0
    """Windows another monitor stored first (taken from the database, not handed to alerts)."""
    alert_changes: list[AlertChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Monitor:
    """Computes and stores the windows of a pipeline (:meth:`run`); see the module docstring."""

    def __init__(self, settings: Settings, stores: Stores) -> None:
        self.settings = settings
        self.stores = stores
        self.last = MonitorPass()
        self._manifests: dict[tuple[str, int], dict[str, Any] | None] = {}
        self.labels = LabelStore(self.capture_root)
        self._unknown: int | None = None

    @property
    def capture_root(self) -> str:
        return self.settings.artifact_root

    def run(
        self,
        pipeline: str,
        cfg: PipelineConfig,
        now: datetime | None = None,
        since: datetime | None = None,
        window: timedelta | None = None,
    ) -> list[WindowResult]:
        """Compute every closed window not stored yet (from ``since`` when given), recompute the
        live performance of stored ones whose labels arrived later; the new and updated
        results, oldest first. :attr:`last` says what the pass did."""
        real = datetime.now(UTC)
        # a window is computed once it closed `grace` ago by the real clock (a replay's `now`
        # in the past is already final), and never while it may still receive captures
        now = min(now or real, real - cfg.monitor.grace)
        self.last = done = MonitorPass()
        self._unknown = None
        if not cfg.monitor.enabled:
            done.notes.append(f"monitoring of {pipeline} is off (monitor.enabled: false)")
            return []
        length = window or cfg.monitor.window
        seconds = int(length.total_seconds())
        closed = align(now, length)
        with self.stores.metadata.read() as uow:
            latest = uow.windows.latest(pipeline, seconds)
        if since is not None:
            first = align(since, length)
        elif latest is not None:
            first = latest.window_start + length
        else:
            found = self._first_capture(pipeline, closed)
            if found is None:
                done.notes.append(f"{pipeline} has no production or canary captures yet")
                return []
            first = align(found, length)
        starts: list[datetime] = []
        at = first
        while at + length <= now and len(starts) < MAX_WINDOWS:
            starts.append(at)
            at += length
        if at + length <= now:
            done.notes.append(
                f"computed the first {MAX_WINDOWS} windows from {first:%Y-%m-%d %H:%M} UTC"
                f" (at most {MAX_WINDOWS} per pass); the next pass goes on from"
                f" {at:%Y-%m-%d %H:%M} UTC"
            )
        results = self._recompute_labelled(pipeline, cfg, length, now, skip=set(starts))
        with self.stores.metadata.read() as uow:
            stored = {
                w.window_start
                for w in uow.windows.list(pipeline, since=first, until=at, seconds=seconds)
            }
        todo = [s for s in starts if s not in stored]
        busy, skipped = self._busy(pipeline, todo, length)
        for start in todo:
            if start in busy:
                result = self.compute(pipeline, cfg, start, start + length)
            else:  # known empty from one scan of the range: no window opened for it
                result = self._no_traffic(pipeline, start, start + length, skipped)
            results.append(self._store(pipeline, cfg, result, seconds, now))
        results.sort(key=lambda r: r.start)
        return results

    def _busy(
        self, pipeline: str, starts: Sequence[datetime], length: timedelta
    ) -> tuple[set[datetime], dict[str, str]]:
        """The windows among ``starts`` that hold captures, from one scan of their range (a
        year of hourly windows is mostly empty when traffic is replayed), and the corrupt files
        skipped."""
        if not starts:
            return set(), {}
        seconds = int(length.total_seconds())
        end = starts[-1] + length
        with open_window(self.capture_root, pipeline, start=starts[0], end=end) as w:
            if w.empty:
                return set(), dict(w.skipped)
            table = w.query(
                f"SELECT DISTINCT floor(epoch(event_time) / {seconds})::BIGINT * {seconds}"
                " AS at FROM captures"
            )
            busy = {EPOCH + timedelta(seconds=int(v)) for v in table.column("at").to_pylist()}
            return busy, dict(w.skipped)

    def _no_traffic(
        self, pipeline: str, start: datetime, end: datetime, skipped: dict[str, str]
    ) -> WindowResult:
        result = WindowResult(pipeline, start, end, skipped=dict(skipped))
        for path, error in skipped.items():
            result.notes.append(f"file {path} is corrupt and was skipped: {error}")
        result.notes.append("no traffic in this window: nothing judged")
        return result

    # -- one window ---------------------------------------------------------------------------
    def compute(
        self, pipeline: str, cfg: PipelineConfig, start: datetime, end: datetime
    ) -> WindowResult:
        """The window's result, judged (not stored)."""
        with open_window(self.capture_root, pipeline, start=start, end=end) as w:
            rows = w.rows
            if rows == 0:
                return self._no_traffic(pipeline, start, end, w.skipped)
            result = WindowResult(pipeline, start, end, rows=rows)
            result.versions = _versions(w)
            manifests = self._manifests_of(pipeline, result.versions, result.notes)
            self._drift(w, cfg, manifests, result)
            self._performance(w, pipeline, cfg, manifests, result)
            result.latency = window_latency(w)
            result.skipped = dict(w.skipped)  # corrupt capture files, and label files too
            for path, error in w.skipped.items():
                result.notes.append(f"file {path} is corrupt and was skipped: {error}")
        result.findings = self._findings(result, cfg)
        return result

    def _drift(
        self,
        w: CaptureWindow,
        cfg: PipelineConfig,
        manifests: dict[int, dict[str, Any]],
        result: WindowResult,
    ) -> None:
        references = {v: m.get("reference") for v, m in manifests.items()}
        report = window_drift(w, references, cfg.monitor)
        result.drift = list(report.features)
        result.traffic = list(report.traffic)
        result.notes += [no_reference_note(v) for v in report.no_reference]

    def _performance(
        self,
        w: CaptureWindow,
        pipeline: str,
        cfg: PipelineConfig,
        manifests: dict[int, dict[str, Any]],
        result: WindowResult,
    ) -> None:
        result.label_files = _label_names(self.labels, pipeline)
        if not manifests:
            return
        classes = next((m.get("classes") for m in manifests.values() if m.get("classes")), None)
        rows, counts = window_performance(
            w, self.labels, manifests, cfg.target.task, cfg.monitor,
            classes=classes, unknown=self._unknown_labels(pipeline, cfg),
        )  # fmt: skip
        result.performance = list(rows)
        result.labels = counts

    def _unknown_labels(self, pipeline: str, cfg: PipelineConfig) -> int:
        """Labels whose key no capture carries: counted once per pass over every capture."""
        if self._unknown is None:
            self._unknown = unknown_labels(self.capture_root, self.labels, pipeline, cfg.monitor)
        return self._unknown

    def _findings(self, result: WindowResult, cfg: PipelineConfig) -> list[Finding]:
        found = drift_findings(result.drift)
        found += performance_findings(result.performance, cfg.monitor)
        found += latency_findings(result.latency, cfg.monitor)
        return worst_per_check(found)

    # -- storing and alerts -------------------------------------------------------------------
    def _store(
        self, pipeline: str, cfg: PipelineConfig, result: WindowResult, seconds: int, now: datetime
    ) -> WindowResult:
        worst = result.worst
        with self.stores.metadata.unit_of_work() as uow:
            record, stored = uow.windows.store(
                pipeline, result.start, result.end, seconds, result.rows, result.state,
                None if worst is None else worst.check, result.to_dict(),
            )  # fmt: skip
            if stored and seconds == int(cfg.monitor.window.total_seconds()):
                # only the configured window length keeps alert episodes: an ad-hoc
                # `kiln monitor --window 1h` shows and stores its windows, nothing more
                grouped = alert_findings(result.findings, cfg.monitor.drift.alert_by)
                self._alerts(uow, pipeline, cfg, result, findings=grouped, now=now)
        if not stored:
            self.last.already_stored += 1
            return WindowResult.from_dict(record.summary)
        self.last.computed += 1
        return result

    def _alerts(
        self,
        uow: UnitOfWork,
        pipeline: str,
        cfg: PipelineConfig,
        result: WindowResult,
        *,
        findings: Sequence[Finding],
        now: datetime,
    ) -> None:
        changes = update_alerts(
            uow, pipeline, result.start, result.end, list(findings), cfg.monitor.consecutive,
            [channel_key(c) for c in cfg.monitor.channels], now,
        )  # fmt: skip
        self.last.alert_changes.extend(changes)

    def _recompute_labelled(
        self,
        pipeline: str,
        cfg: PipelineConfig,
        length: timedelta,
        now: datetime,
        skip: set[datetime],
    ) -> list[WindowResult]:
        """Stored windows (within ``monitor.labels.max_age``) computed before labels arrived:
        their live performance again, the row updated, the new findings handed to alerts."""
        seconds = int(length.total_seconds())
        horizon = align(now - cfg.monitor.labels.max_age - length, length)
        names = set(_label_names(self.labels, pipeline))
        if not names:
            return []
        with self.stores.metadata.read() as uow:
            stale = [
                w for w in uow.windows.list(pipeline, since=horizon, seconds=seconds)
                if w.rows > 0 and w.window_start not in skip
                and not names <= set(w.summary.get("label_files") or ())
            ]  # fmt: skip
        results = []
        for record in stale:
            old = WindowResult.from_dict(record.summary)
            with open_window(self.capture_root, pipeline, start=old.start, end=old.end) as w:
                fresh = replace(old, notes=[n for n in old.notes if "performance" not in n])
                manifests = self._manifests_of(pipeline, old.versions, [])
                self._performance(w, pipeline, cfg, manifests, fresh)
                fresh.skipped = {**old.skipped, **w.skipped}
            fresh.findings = worst_per_check(
                [f for f in old.findings if f.kind != "performance"]
                + performance_findings(fresh.performance, cfg.monitor)
            )
            worst = fresh.worst
            with self.stores.metadata.unit_of_work() as uow:
                uow.windows.update(
                    record.id, fresh.rows, fresh.state, None if worst is None else worst.check,
                    fresh.to_dict(),
                )  # fmt: skip
                perf = [f for f in fresh.findings if f.kind == "performance"]
                if seconds == int(cfg.monitor.window.total_seconds()):
                    self._alerts(uow, pipeline, cfg, fresh, findings=perf, now=now)
            self.last.recomputed += 1
            results.append(fresh)
        return results

    # -- reading ------------------------------------------------------------------------------
    def _first_capture(self, pipeline: str, before: datetime) -> datetime | None:
        with open_window(self.capture_root, pipeline, start=EPOCH, end=before) as w:
            if w.empty:
                return None
            first = w.query("SELECT min(event_time) AS t FROM captures").column("t")[0].as_py()
        return None if first is None else first.astimezone(UTC)

    def _manifests_of(
        self, pipeline: str, versions: Sequence[int], notes: list[str]
    ) -> dict[int, dict[str, Any]]:
        """The manifest JSON of each version (cached per monitor), never its models."""
        found: dict[int, dict[str, Any]] = {}
        for v in versions:
            key = (pipeline, v)
            if key not in self._manifests:
                self._manifests[key] = self._read_manifest(pipeline, v)
            manifest = self._manifests[key]
            if manifest is None:
                notes.append(f"version {v} served this window but is not registered here")
            else:
                found[v] = manifest
        return found

    def _read_manifest(self, pipeline: str, version: int) -> dict[str, Any] | None:
        with self.stores.metadata.read() as uow:
            records = {v.version: v for v in uow.versions.list(pipeline)}
        record = records.get(version)
        if record is None:
            return None
        label = f"the manifest of {pipeline} v{version}"
        raw = self.stores.content.get(record.manifest_digest, what=label)
        try:
            manifest: dict[str, Any] = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise IntegrityError(f"{label} is not valid JSON: {e}") from e
        return manifest

    # -- notifications ------------------------------------------------------------------------
    def deliver(
        self,
        pipeline: str,
        cfg: PipelineConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> DeliveryReport:
        """Send the due notifications of ``pipeline``'s alerts on ``cfg``'s channels (the
        outbox); a channel that fails keeps its notifications for a later pass. ``clock`` is
        read at each send, not once (a lease taken with an old time is already over)."""
        return deliver_due(
            self.stores.metadata.unit_of_work, pipeline, list(cfg.monitor.channels), clock=clock
        )


def _versions(w: CaptureWindow) -> list[int]:
    table = w.query("SELECT DISTINCT version FROM captures ORDER BY version")
    return [int(v) for v in table.column("version").to_pylist()]


def _label_names(labels: LabelStore, pipeline: str) -> list[str]:
    """The names of ``pipeline``'s label files (a file is never rewritten: a new name is new
    labels), whatever clock named them."""
    return sorted(path.rsplit("/", 1)[-1] for path in labels.files(pipeline))
