"""The registry follower: a thread that re-reads the registry and swaps in new routing tables.

Every ``reload_seconds`` (or at once after a promotion made through this server) it reads which
version of each pipeline is in production, which is its canary (and its traffic share) and which
are in shadow. A version it has not loaded yet is loaded here, in the background: the manifest's
environment lock must agree with this process (major.minor of each library) and every digest
must match (``kiln.registry.Version.predictor``, which loads the package through
``load_package``). Only then is the new table swapped in. A refused version is
logged once, counted, shown by ``GET /v1/pipelines/{name}``, retried every ``retry_seconds``,
and the version that served before keeps serving -- or, when no version of the pipeline ever
loaded in this process (a fresh server), nothing serves it and ``/readyz`` answers 503; the log
says which. A refused canary answers nothing (production answers its share).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from kiln.config.models import CaptureConfig
from kiln.errors import KilnError
from kiln.registry.version import Version
from kiln.serving._metrics import Metrics
from kiln.serving._routing import Deployed, PipelineRoute, Refusal, RoutingTable
from kiln.serving._schema import RequestSchema
from kiln.stores import Stores, VersionRecord

__all__ = ["RegistryFollower"]

logger = logging.getLogger("kiln.serving")

_Key = tuple[str, int, str]


@dataclass(frozen=True)
class _Wanted:
    production: VersionRecord | None
    shadows: tuple[VersionRecord, ...]
    canary: VersionRecord | None = None

    def records(self) -> tuple[VersionRecord, ...]:
        wanted = (self.production, self.canary, *self.shadows)
        return tuple(v for v in wanted if v is not None)


class RegistryFollower:
    def __init__(
        self,
        stores: Stores,
        metrics: Metrics,
        *,
        interval: float,
        max_instances: int,
        retry_seconds: float = 30.0,
    ) -> None:
        self.table = RoutingTable({})
        self._stores = stores
        self._metrics = metrics
        self._interval = interval
        self._max_instances = max_instances
        self._retry_seconds = retry_seconds
        self._loaded: dict[_Key, Deployed] = {}
        self._refused: dict[_Key, tuple[Refusal, float]] = {}
        self._registry_failing = False
        self._file_problem: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kiln-registry", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Re-read the registry now (after a promotion made through this process)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # a bug here must not stop the follower: log it, try again
                logger.exception("the registry follower failed; retrying")
            self._wake.wait(self._interval)
            self._wake.clear()

    def refresh(self) -> RoutingTable:
        """Read the registry once, load what is new, swap the table in; returns it."""
        unavailable = self._follow_file()
        if unavailable is not None:
            old = self.table
            self.table = RoutingTable(
                old.pipelines, old.read_at, registry_error=unavailable, unavailable=unavailable
            )
            return self.table
        try:
            wanted = self._read_registry()
        except Exception as e:  # the database is down or locked: keep serving what we have
            self._metrics.reload_failures.labels("(registry)").inc()
            if not self._registry_failing:
                self._registry_failing = True
                logger.error("cannot read the registry (serving what was loaded): %s", e)
            old = self.table
            self.table = RoutingTable(old.pipelines, old.read_at, registry_error=str(e))
            return self.table
        if self._registry_failing:
            self._registry_failing = False
            logger.warning("the registry can be read again")
        old = self.table
        routes = {
            name: self._route(name, want, old.pipelines.get(name)) for name, want in wanted.items()
        }
        table = RoutingTable(routes, read_at=datetime.now(UTC))
        _log_changes(old.pipelines, routes)
        self.table = table
        serving = {
            id(d) for r in routes.values() for d in (r.production, r.canary, *r.shadows) if d
        }
        self._loaded = {k: d for k, d in self._loaded.items() if id(d) in serving}
        wanted_keys = {_key(v) for w in wanted.values() for v in w.records()}
        self._refused = {k: v for k, v in self._refused.items() if k in wanted_keys}
        return table

    def _follow_file(self) -> str | None:
        """Follow the SQLite file at the configured path: None while it is the file opened (or
        the one reopened after it was replaced); else why the registry is unavailable."""
        metadata = self._stores.metadata
        problem = metadata.replaced()
        if problem is None:
            if self._file_problem is not None:
                self._file_problem = None
                logger.warning("the metadata database %s is back: following it", metadata.path)
            return None
        if self._file_problem is None:
            logger.error(
                "%s while this server has it open: /readyz answers 503 and registry writes are"
                " refused until a Kiln database is at that path again (it is then reopened)",
                problem,
            )
        self._file_problem = problem
        if metadata.path is None or not metadata.path.exists():
            return problem
        try:
            metadata.reopen()
        except KilnError as e:
            return f"{problem}; the file now there cannot be used: {e.message}"
        self._file_problem = None
        logger.warning(
            "reopened the metadata database %s (another file was put there): following it",
            metadata.path,
        )
        return None

    def _read_registry(self) -> dict[str, _Wanted]:
        with self._stores.metadata.read() as uow:
            out = {}
            for pipeline in uow.pipelines.list():
                production = uow.versions.by_stage(pipeline.name, "production")
                shadows = uow.versions.by_stage(pipeline.name, "shadow")
                canary = uow.versions.by_stage(pipeline.name, "canary")
                out[pipeline.name] = _Wanted(
                    production[0] if production else None,
                    tuple(shadows),
                    canary[0] if canary else None,
                )
            return out

    def _route(self, name: str, want: _Wanted, old: PipelineRoute | None) -> PipelineRoute:
        served = old.production if old is not None else None
        production = None
        if want.production is not None:
            if served is not None and served.version != want.production.version:
                instead = f"v{served.version}, the version that served, keeps serving"
            else:
                instead = f"nothing serves {name}: its predictions answer 503 until a version loads"
            production = self._deployed(want.production, instead=instead)
            if production is None:
                production = served  # the version that served keeps serving (None: nothing)
        shadows = tuple(
            d
            for v in want.shadows
            if (d := self._deployed(v, instead=f"v{v.version} does not shadow")) is not None
        )
        canary, share = None, 0.0
        if want.canary is not None:
            share = min(max(want.canary.traffic_share or 0.0, 0.0), 1.0)
            instead = "production answers the canary's share"
            canary = self._deployed(want.canary, instead=instead) if share > 0.0 else None
            if canary is None:
                share = 0.0
        refusals = tuple(
            self._refused[_key(v)][0] for v in want.records() if _key(v) in self._refused
        )
        return PipelineRoute(
            name=name,
            production=production,
            shadows=shadows,
            registry_production=want.production.version if want.production else None,
            registry_shadows=tuple(v.version for v in want.shadows),
            refusals=refusals,
            canary=canary,
            canary_share=share,
            registry_canary=want.canary.version if want.canary else None,
        )

    def _deployed(self, record: VersionRecord, *, instead: str) -> Deployed | None:
        """The loaded version, or None if it is refused; ``instead`` (what answers in its place)
        is logged with the refusal."""
        key = _key(record)
        found = self._loaded.get(key)
        if found is not None:
            return found
        refused = self._refused.get(key)
        if refused is not None and time.monotonic() < refused[1]:
            return None
        try:
            deployed = self._load(record)
        except Exception as e:  # any reason a package cannot serve is a refusal, not a crash
            message = str(e) if isinstance(e, KilnError) else f"{type(e).__name__}: {e}"
            self._metrics.reload_failures.labels(record.pipeline).inc()
            if refused is None or refused[0].message != message:
                logger.error(
                    "refused %s v%d (%s): %s",
                    record.pipeline, record.version, instead, message,
                )  # fmt: skip
            refusal = Refusal(
                record.pipeline, record.version, record.manifest_digest, message, datetime.now(UTC)
            )
            self._refused[key] = (refusal, time.monotonic() + self._retry_seconds)
            return None
        self._refused.pop(key, None)
        self._loaded[key] = deployed
        return deployed

    def _load(self, record: VersionRecord) -> Deployed:
        label = f"{record.pipeline} v{record.version}"
        version = Version(self._stores, record, package_label=label)
        predictor = version.predictor  # environment lock and every digest checked
        return Deployed(
            pipeline=record.pipeline,
            version=record.version,
            digest=record.manifest_digest,
            predictor=predictor,
            request=RequestSchema(
                predictor.schema,
                predictor.segment_column,
                max_instances=self._max_instances,
                unseen=predictor.unseen_policy,
                max_text=predictor.max_text_length,
            ),
            sample_rate=self._sample_rate(version, label),
            loaded_at=datetime.now(UTC),
        )

    def _sample_rate(self, version: Version, label: str) -> float:
        """``capture.sample_rate`` of the kiln.yaml that the version was trained from."""
        version.run  # noqa: B018 -- a run that cannot be read refuses the version
        try:
            loaded = version.loaded
        except KilnError as e:
            default = CaptureConfig().sample_rate
            logger.warning(
                "the config of %s does not parse here (%s); capturing at the default rate %s",
                label, e, default,
            )  # fmt: skip
            return default
        return loaded.config.capture.sample_rate


def _key(record: VersionRecord) -> _Key:
    return (record.pipeline, record.version, record.manifest_digest)


def _log_changes(old: Mapping[str, PipelineRoute], new: Mapping[str, PipelineRoute]) -> None:
    for name, route in new.items():
        before = old.get(name)
        was = before.production.version if before and before.production else None
        now = route.production.version if route.production else None
        if was != now:
            logger.info("%s: %s serves (was %s)", name, _v(now), _v(was))
        was_canary = (
            (before.canary.version, before.canary_share) if before and before.canary else None
        )
        now_canary = (route.canary.version, route.canary_share) if route.canary else None
        if was_canary != now_canary:
            logger.info("%s: canary %s (was %s)", name, _canary(now_canary), _canary(was_canary))
        was_shadows = {d.version for d in before.shadows} if before else set()
        now_shadows = {d.version for d in route.shadows}
        if was_shadows != now_shadows:
            logger.info(
                "%s: shadow versions %s (were %s)", name, sorted(now_shadows), sorted(was_shadows)
            )


def _v(version: int | None) -> str:
    return "nothing" if version is None else f"v{version}"


def _canary(canary: tuple[int, float] | None) -> str:
    return "none" if canary is None else f"v{canary[0]} answers {canary[1] * 100:g}% of requests"
