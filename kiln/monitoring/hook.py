"""The monitor as a step of a loop: what `kiln watch` and `kiln scheduler` run for each pipeline
after the release tick, and where a pipeline's monitor settings come from.

A pipeline is monitored with the kiln.yaml the loop was given (the scheduler's folder) or, when
there is none, with the config its production version was trained from (``runs.config_text``):
monitor settings are not part of the config digest, so that config is the one serving. A failing
monitor pass never stops the loop: its error is logged and returned as a line.

Each pass first measures the pipeline's storage when its newest measurement is older than
:data:`STORAGE_EVERY` (so budgets and `kiln status` see storage without anyone running `kiln
cost`; a failure is logged and the pass goes on), and checks the pipeline's
``cost.budget_per_month`` (:mod:`kiln.monitoring.cost.budget`)
before it delivers the outbox, so a budget alert goes out in the pass that opened it; a
pipeline with nothing in production is checked with the config of its latest run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kiln.config.loader import LoadedConfig, parse_config
from kiln.config.models import PipelineConfig
from kiln.errors import KilnError
from kiln.monitoring import gauges
from kiln.monitoring.alerts import AlertChange
from kiln.monitoring.monitor import Monitor
from kiln.settings import Settings
from kiln.stores import Stores

__all__ = [
    "STORAGE_EVERY",
    "MonitorHook",
    "budget_lines",
    "change_line",
    "latest_config",
    "production_config",
    "refresh_gauges",
    "serve_gauges",
]

log = logging.getLogger("kiln.monitor")

STORAGE_EVERY = timedelta(hours=1)
"""A pass measures a pipeline's storage when its newest measurement is older than this."""


def production_config(stores: Stores, pipeline: str) -> LoadedConfig | None:
    """The kiln.yaml the production version of ``pipeline`` was trained from; None when
    nothing of it is in production."""
    with stores.metadata.read() as uow:
        production = next((v for v in uow.versions.list(pipeline) if v.stage == "production"), None)
        if production is None:
            return None
        run = uow.runs.get(production.run_id)
    return parse_config(run.config_text, Path(run.config_path or "kiln.yaml"))


def latest_config(stores: Stores, pipeline: str) -> LoadedConfig | None:
    """The kiln.yaml of ``pipeline``'s latest run; None when it never ran."""
    with stores.metadata.read() as uow:
        run = uow.runs.latest(pipeline)
    if run is None:
        return None
    return parse_config(run.config_text, Path(run.config_path or "kiln.yaml"))


class MonitorHook:
    """``hook(pipeline)``: one monitor pass over the pipeline's closed windows, then the due
    notifications; returns the lines to log. ``configs(name)`` gives the kiln.yaml the loop
    knows (None: the production version's)."""

    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        *,
        configs: Callable[[str], PipelineConfig | None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.monitor = Monitor(settings, stores)
        self.settings = settings
        self.stores = stores
        self.configs = configs
        self.clock = clock

    def __call__(self, pipeline: str) -> list[str]:
        try:
            return self._pass(pipeline)
        except KilnError as e:
            log.error("monitor of %r failed: %s", pipeline, e)
            return [f"monitor failed: {e}"]
        except Exception as e:  # a bug in a monitor part must not stop the release loop
            log.exception("monitor of %r failed", pipeline)
            return [f"monitor failed: {type(e).__name__}: {e}"]

    def _pass(self, pipeline: str) -> list[str]:
        cfg = self.configs(pipeline) if self.configs is not None else None
        served = cfg is not None
        if cfg is None:
            loaded = production_config(self.stores, pipeline)
            served = loaded is not None
            # nothing serves, nothing to monitor; but training costs money: a budget is
            # still checked, with the config of the latest run
            loaded = loaded or latest_config(self.stores, pipeline)
            if loaded is None:
                return []
            cfg = loaded.config
        if not served and cfg.cost.budget_per_month is None:
            return []
        now = self.clock()
        lines = self.storage(pipeline)
        lines += self._windows(pipeline, cfg, now) if served else []
        lines += self.budget(pipeline, cfg, now)
        sent = self.monitor.deliver(pipeline, cfg, self.clock)
        if sent.attempted:
            held = f", {len(sent.postponed)} held back (channel down)" if sent.postponed else ""
            lines.append(
                f"notifications: {len(sent.delivered)} delivered, {len(sent.failed)} failed"
                f"{held} (kept and retried on a later pass)"
            )
        return lines

    def _windows(self, pipeline: str, cfg: PipelineConfig, now: datetime) -> list[str]:
        results = self.monitor.run(pipeline, cfg, now=now)
        done = self.monitor.last
        lines = [
            f"monitor window {r.start:%Y-%m-%d %H:%M} UTC: {r.state}"
            + (f" (worst: {r.worst.message})" if r.worst is not None else "")
            for r in results
        ]
        lines += [change_line(c) for c in done.alert_changes if c.kind != "still_open"]
        if results:  # "no captures yet" on every pass of a loop is noise
            lines += done.notes
        return lines

    def storage(self, pipeline: str) -> list[str]:
        """Measure the pipeline's storage when its newest measurement is older than
        :data:`STORAGE_EVERY` (real time: measurements are stamped with it). Never fails the
        pass: a failure is logged and is a line."""
        from kiln.monitoring.cost.storage import measure_storage, newest_measurement

        try:
            newest = newest_measurement(self.stores.metadata, pipeline)
            if newest is not None and datetime.now(UTC) - newest < STORAGE_EVERY:
                return []
            measure_storage(self.stores, self.settings, pipeline=pipeline)
        except Exception as e:  # storage cost must not stop the monitor
            log.exception("storage measurement of %r failed", pipeline)
            return [f"storage measurement failed: {type(e).__name__}: {e}"]
        return []

    def budget(self, pipeline: str, cfg: PipelineConfig, now: datetime) -> list[str]:
        """The pipeline's budget check (:mod:`kiln.monitoring.cost.budget`), before the
        delivery so that its notification goes out in this pass; a failure is a line, and
        the pass goes on to deliver."""
        if cfg.cost.budget_per_month is None:
            return []
        try:
            return budget_lines(self.settings, self.stores, {pipeline: cfg}, now)
        except KilnError as e:
            log.error("budget check of %r failed: %s", pipeline, e)
            return [f"budget check failed: {e}"]


def budget_lines(
    settings: Settings, stores: Stores, configs: dict[str, PipelineConfig], now: datetime
) -> list[str]:
    """Check the budgets of ``configs`` (prices from the settings); one line per alert change."""
    from kiln.config.prices import resolve_prices
    from kiln.monitoring.cost.budget import check_budgets

    checks = check_budgets(stores.metadata, resolve_prices(settings), configs, now=now)
    return [change_line(c) for b in checks for c in b.changes if c.kind != "still_open"]


def change_line(change: AlertChange) -> str:
    """One line for an alert episode that changed in a window."""
    a = change.alert
    return f"alert #{a.id} {change.kind}: {a.check} ({a.level}, streak {a.streak}): {a.message}"


def serve_gauges(port: int) -> Any:
    """Serve the monitoring gauges on ``port`` of 127.0.0.1 (Prometheus text format), on a
    daemon thread; the server is returned (``shutdown()`` stops it)."""
    return gauges.serve(port)


def refresh_gauges(stores: Stores) -> None:
    """Set the gauges from the database (after each pass)."""
    with stores.metadata.read() as uow:
        gauges.refresh(uow)
