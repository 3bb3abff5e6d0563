"""What serves: an immutable routing table that the registry follower replaces as a whole.

A request reads ``follower.table`` once and uses that table to the end, so a swap never mixes
two tables in one answer and needs no lock: replacing the reference is atomic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kiln.registry import Predictor
from kiln.serving._schema import RequestSchema

__all__ = ["Deployed", "PipelineRoute", "Refusal", "RoutingTable"]


@dataclass(frozen=True, eq=False)
class Deployed:
    """One loaded, verified version: its predictor, request schema and capture sample rate."""

    pipeline: str
    version: int
    digest: str
    predictor: Predictor
    request: RequestSchema
    sample_rate: float
    loaded_at: datetime
    label: str = field(init=False)
    """The version as a metric label."""
    segment_column: str | None = field(init=False)
    segments: frozenset[str] = field(init=False)
    """Segments with their own model (a row of any other segment goes to the fallback)."""
    unseen_fallback: bool = field(init=False)
    """Rows with an unseen category are answered by the fallback (not a model error)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", str(self.version))
        object.__setattr__(self, "segment_column", self.predictor.segment_column)
        object.__setattr__(self, "segments", frozenset(self.predictor.segments))
        object.__setattr__(self, "unseen_fallback", self.predictor.unseen_policy == "fallback")

    def describe(self) -> dict[str, Any]:
        p = self.predictor
        return {
            "version": self.version,
            "manifest_digest": self.digest,
            "segments": p.segments,
            "routed_to_fallback": sorted(p.manifest.get("routed_to_fallback", {})),
            "capture_sample_rate": self.sample_rate,
            "loaded_at": self.loaded_at.isoformat(),
            "classes": p.classes,
        }


@dataclass(frozen=True)
class Refusal:
    """A version the server would not load, and why (logged once, kept until it loads)."""

    pipeline: str
    version: int
    digest: str
    message: str
    at: datetime

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "message": self.message, "at": self.at.isoformat()}


@dataclass(frozen=True)
class PipelineRoute:
    """``production`` is what answers (an older version while a newer one is refused);
    ``registry_production`` is what the registry says should.

    ``canary``, when loaded, answers ``canary_share`` of the live requests instead of
    production (a refused canary is None: production answers everything). Shadows see copies
    of the requests that production answered.
    """

    name: str
    production: Deployed | None
    shadows: tuple[Deployed, ...]
    registry_production: int | None
    registry_shadows: tuple[int, ...]
    refusals: tuple[Refusal, ...] = ()
    canary: Deployed | None = None
    canary_share: float = 0.0
    """In (0, 1) when ``canary`` is set, else 0."""
    registry_canary: int | None = None

    @property
    def last_reload_error(self) -> Refusal | None:
        return max(self.refusals, key=lambda r: r.at) if self.refusals else None

    def missing(self) -> str | None:
        """Why this pipeline is not ready, or None."""
        if self.registry_production is None or self.production is not None:
            return None
        refused = [r for r in self.refusals if r.version == self.registry_production]
        why = f"refused: {refused[0].message}" if refused else "not loaded yet"
        return f"{self.name} v{self.registry_production}: {why}"


@dataclass(frozen=True)
class RoutingTable:
    pipelines: Mapping[str, PipelineRoute]
    read_at: datetime | None = None
    """When the registry was last read; None before the first read."""
    registry_error: str | None = None
    unavailable: str | None = None
    """Why the registry cannot be trusted now (its database file was moved or replaced): the
    server is not ready, whatever it serves."""

    def missing(self) -> list[str]:
        if self.unavailable is not None:
            return [self.unavailable, *self._missing()]
        return self._missing()

    def _missing(self) -> list[str]:
        if self.read_at is None:
            reason = f": {self.registry_error}" if self.registry_error else ""
            return [f"the registry has not been read yet{reason}"]
        return [m for route in self.pipelines.values() if (m := route.missing())]
