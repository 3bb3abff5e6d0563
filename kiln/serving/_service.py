"""One server process: the stores, the registry follower, shadow, capture and metrics.

``Service`` is built without side effects; ``start`` (the ASGI lifespan start-up) opens the
stores and starts the background threads, ``stop`` (the lifespan shutdown, e.g. on SIGTERM)
stops following the registry, predicts the queued shadow copies and flushes the captures.
"""

from __future__ import annotations

import logging
import os
import re
import socket

from pydantic import SecretStr

from kiln.errors import AuthError
from kiln.registry import Stages, check_admin
from kiln.serving._capture import Capture
from kiln.serving._errors import ApiError, unauthorized
from kiln.serving._follower import RegistryFollower
from kiln.serving._metrics import CaptureMetrics, Metrics
from kiln.serving._predict import Predictions
from kiln.serving._routing import RoutingTable
from kiln.serving._schema import MAX_INSTANCES
from kiln.serving._shadow import ShadowRunner
from kiln.serving._usage import UsageMeter, UsageRecorder
from kiln.settings import Settings
from kiln.stores import CaptureWriter, Stores, open_stores

__all__ = ["Service"]

logger = logging.getLogger("kiln.serving")

_NOT_STARTED = RoutingTable({})
_READ_HINT = "send the header 'Authorization: Bearer <token>' with the predict or admin token"


class Service:
    def __init__(self, settings: Settings, *, max_instances: int = MAX_INSTANCES) -> None:
        self.settings = settings
        self.max_instances = max_instances
        self.metrics = Metrics()
        self.capture = Capture(None, self.metrics)
        self.stores: Stores | None = None
        self.follower: RegistryFollower | None = None
        self.shadow: ShadowRunner | None = None
        self._writer: CaptureWriter | None = None
        self._read_tokens = _tokens(settings.predict_token, settings.admin_token)
        self._meter = meter = UsageMeter()
        self.usage = UsageRecorder(
            meter,
            self.metrics,
            self._loaded,
            reserved_cpus=settings.serving_cpus,
            every=settings.usage_flush_seconds,
        )
        self.predictions = Predictions(
            self.table,
            self.metrics,
            self.capture,
            lambda: self.shadow,
            tokens=self._read_tokens,
            usage=meter,
        )

    def table(self) -> RoutingTable:
        follower = self.follower
        return _NOT_STARTED if follower is None else follower.table

    def start(self) -> None:
        settings = self.settings
        self.stores = open_stores(settings)
        self._writer = CaptureWriter(
            settings.artifact_root,
            writer_id=_writer_id(),
            max_queue=settings.capture_max_queue,
            flush_rows=settings.capture_flush_rows,
            flush_seconds=settings.capture_flush_seconds,
            max_backlog_bytes=settings.capture_max_backlog_bytes,
            events=CaptureMetrics(self.metrics),
        )
        self._writer.start()
        self.capture.attach(self._writer)
        self.shadow = ShadowRunner(self.capture, self.metrics, usage=self._meter)
        self.shadow.start()
        self.follower = RegistryFollower(
            self.stores,
            self.metrics,
            interval=settings.reload_seconds,
            max_instances=self.max_instances,
        )
        self.follower.start()
        self.usage.start(self.stores.metadata)
        logger.info(
            "serving the registry at %s (artifacts and captures: %s), reloading every %ss",
            self.stores.metadata, settings.artifact_root, settings.reload_seconds,
        )  # fmt: skip

    def stop(self, timeout: float = 10.0) -> None:
        if self.follower is not None:
            self.follower.stop(timeout)
        if self.shadow is not None:
            self.shadow.close(timeout)
        if self._writer is not None:  # captures first: a stuck usage write must not lose them
            self._writer.close(timeout)
            w = self._writer
            logger.info(
                "captures: %d written, %d dropped, %d rejected, %d not written",
                w.written, w.dropped, w.rejected, w.queued,
            )  # fmt: skip
        self.usage.close(timeout)
        if self.stores is not None:
            self.stores.close()
        self.metrics.process_exited()

    def _loaded(self) -> list[str]:
        """The pipelines this process serves now (a version of theirs is loaded)."""
        return [
            name
            for name, route in self.table().pipelines.items()
            if route.production is not None or route.canary is not None or route.shadows
        ]

    def capture_error(self) -> str | None:
        """Why captures are not being written now (None when they are, or none are taken)."""
        writer = self._writer
        failing = None if writer is None else writer.failing
        if writer is None or failing is None:
            return None
        return (
            f"captures cannot be written to {writer.root_url}: {failing};"
            f" {writer.queued} kept in memory and retried, {writer.dropped} dropped so far"
        )

    def stages(self) -> Stages:
        if self.stores is None:
            raise ApiError(503, "not_ready", "the server is starting", hint="retry in a moment")
        return Stages(self.stores.metadata)

    def check_read(self, presented: str | None) -> None:
        """Reads are open when no predict token is set; else either token may read."""
        if not self._read_tokens:
            return
        if presented is not None:
            for token in self._read_tokens:
                try:
                    check_admin(SecretStr(token), presented)
                    return
                except AuthError:
                    continue
        raise unauthorized("reading the registry needs the predict token", _READ_HINT)

    def check_admin(self, presented: str | None) -> None:
        configured = self.settings.admin_token
        if configured is None or not configured.get_secret_value():
            raise ApiError(
                403,
                "admin_disabled",
                "admin endpoints are disabled on this server: set KILN_ADMIN_TOKEN",
                hint="start the server with KILN_ADMIN_TOKEN set, then send it as a bearer token",
            )
        try:
            check_admin(configured, presented)
        except AuthError as e:
            raise unauthorized(e.message, "send 'Authorization: Bearer <admin token>'") from None


def _tokens(predict: SecretStr | None, admin: SecretStr | None) -> list[str]:
    if predict is None or not predict.get_secret_value():
        return []
    tokens = (predict, admin)
    return [t.get_secret_value() for t in tokens if t is not None and t.get_secret_value()]


def _writer_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:80] or "host"
    return f"{host}-{os.getpid()}"
