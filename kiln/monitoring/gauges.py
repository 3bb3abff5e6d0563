"""Prometheus gauges of the monitoring state, read from the metadata database.

The gauges describe the *current* state (the latest window of each pipeline, the open
episodes, the outbox's backlog), so any process that can read the database (`kiln watch`,
`kiln scheduler`) can serve them, and a restarted one serves the same figures at once. They live
in their own registry: the prediction server's per-request metrics are another registry in
another process.

- ``kiln_monitor_state{pipeline}``: the state of the pipeline's latest window (0 ok, 1 warn,
  2 alert, -1 no traffic); absent for a pipeline never monitored yet.
- ``kiln_alerts_open{pipeline,kind,level}``: open episodes (a count that fell to none stays
  exported as 0, so a graph shows the recovery).
- ``kiln_alert_deliveries_pending``: notifications waiting in the outbox (a channel that is down
  makes it grow).
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from kiln.stores.metadata import UnitOfWork

__all__ = ["STATE_CODES", "MonitorGauges", "gauges", "refresh", "serve"]

STATE_CODES = {"ok": 0, "warn": 1, "alert": 2, "no_traffic": -1}


class MonitorGauges:
    """The monitoring gauges in their own :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.state = Gauge(
            "kiln_monitor_state",
            "State of the pipeline's latest monitor window: 0 ok, 1 warn, 2 alert, -1 no traffic.",
            ["pipeline"],
            registry=self.registry,
        )
        self.alerts_open = Gauge(
            "kiln_alerts_open",
            "Open alert episodes.",
            ["pipeline", "kind", "level"],
            registry=self.registry,
        )
        self.deliveries_pending = Gauge(
            "kiln_alert_deliveries_pending",
            "Alert notifications waiting in the outbox (undelivered, retried later).",
            registry=self.registry,
        )
        self._open_labels: set[tuple[str, str, str]] = set()

    def refresh(self, uow: UnitOfWork) -> None:
        """Set every gauge from the database (a read-only unit of work is enough)."""
        names = {p.name for p in uow.pipelines.list()}
        counts = {(c.pipeline, c.kind, c.level): c.count for c in uow.alerts.open_counts()}
        names |= {pipeline for pipeline, _, _ in counts}
        states = {}
        for name in sorted(names):
            latest = uow.windows.latest(name)
            if latest is not None:
                states[name] = STATE_CODES[latest.state]
        pending = uow.alerts.pending_deliveries()

        self.state.clear()
        for name, code in states.items():
            self.state.labels(pipeline=name).set(code)
        for labels in self._open_labels - counts.keys():
            self.alerts_open.labels(*labels).set(0)
        for labels, count in counts.items():
            self.alerts_open.labels(*labels).set(count)
        self._open_labels |= counts.keys()
        self.deliveries_pending.set(pending)

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Serve the gauges as Prometheus text on ``addr:port`` from a daemon thread; port 0
        picks a free port (``server.server_port``). ``server.shutdown()`` stops it. The local
        address by default, as `kiln serve`: pass ``0.0.0.0`` for a Prometheus on another
        host."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return server


gauges = MonitorGauges()
"""The gauges of this process: what `kiln watch --metrics-port` and `kiln scheduler
--metrics-port` serve and refresh after each pass."""


def refresh(uow: UnitOfWork) -> None:
    gauges.refresh(uow)


def serve(port: int, addr: str = "127.0.0.1") -> WSGIServer:
    return gauges.serve(port, addr)
