"""Alert episodes from the findings of monitor windows: open after N windows, notify once,
resolve on recovery.

A check (``drift:temp:EWR``, ``errors``, ...) whose finding is warn or alert in a window starts
a *pending* episode, or extends its live one (streak + 1). When the streak reaches
``monitor.consecutive`` the episode *opens* and one ``opened`` notification per channel goes
into the outbox: a figure that stays high for weeks notifies once. A window in which the check
is ``ok`` resolves it: an open episode queues one ``resolved`` notification, a pending one is
dropped without any (it never reached the streak). ``unjudged`` findings (too few rows) and
checks absent from a window (no traffic) change nothing.

Escalation (decided here): an episode that opened at ``warn`` and later reaches ``alert`` is
announced once more, as an ``opened`` delivery on the channel key ``<channel>#alert``
(:data:`ESCALATED`): the outbox keeps its one row per (alert, event, channel), so an episode
notifies at most twice (warn, then alert) and once when it resolves, however it wavers.

Everything is written in the caller's unit of work (with the window it judged), and every
change is compare-and-set on the episode's ``last_window``: a window seen twice, or judged by
two monitors at once, counts once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from kiln.monitoring.findings import LEVELS, Finding
from kiln.stores.metadata import UnitOfWork
from kiln.stores.metadata.alerts import AlertLevel, AlertRecord

__all__ = ["ESCALATED", "AlertChange", "ChangeKind", "escalation_channel", "update_alerts"]

ESCALATED = "#alert"
"""Suffix of the channel key of an escalation's delivery. Channel keys never hold a ``#``
(a webhook's key drops the URL's fragment), so the suffix cannot be mistaken for one."""

ChangeKind = Literal["pending", "opened", "escalated", "still_open", "resolved", "dropped"]
"""pending: started or extended below the streak; opened: reached it (notified); escalated:
an open warn episode reached alert (notified again); still_open: one more window of an open
episode; resolved: an open episode recovered (notified); dropped: a pending one recovered."""

_KEPT = ("opened_level", "escalated_window", "peak_level", "peak_value")
"""Keys of an episode's details that describe the episode, not its latest window."""


@dataclass(frozen=True)
class AlertChange:
    kind: ChangeKind
    alert: AlertRecord
    queued: int = 0
    """Notifications this change put into the outbox."""


def escalation_channel(channel: str) -> str:
    return channel + ESCALATED


def update_alerts(  # noqa: PLR0917 (the documented positional signature)
    uow: UnitOfWork,
    pipeline: str,
    window_start: datetime,
    window_end: datetime,
    findings: Sequence[Finding],
    consecutive: int,
    channels: list[str],
    now: datetime,
) -> list[AlertChange]:
    """Start, extend, open, escalate or resolve the episodes of ``pipeline`` that the
    window's findings call for; ``channels`` are the channel keys (see
    :func:`kiln.monitoring.notify.channel_key`) that opened and resolved episodes notify."""
    if consecutive < 1:
        raise ValueError(f"consecutive must be at least 1, got {consecutive}")
    step = _Step(uow, pipeline, window_start, window_end, consecutive, channels, now)
    changes = []
    for finding in _worst_per_check(findings).values():
        change = step.over(finding) if finding.level in ("warn", "alert") else step.within(finding)
        if change is not None:
            changes.append(change)
    return changes


def _worst_per_check(findings: Sequence[Finding]) -> dict[str, Finding]:
    """One finding per check (the most severe, then the largest value); unjudged ones left
    out. Two findings of one check in a window (e.g. two versions) make one episode."""
    worst: dict[str, Finding] = {}
    for f in findings:
        if f.level == "unjudged":
            continue
        seen = worst.get(f.check)
        if seen is None or _severity(f) > _severity(seen):
            worst[f.check] = f
    return worst


def _severity(f: Finding) -> tuple[int, float]:
    return LEVELS[f.level], _number(f.value) or 0.0


@dataclass(frozen=True)
class _Step:
    uow: UnitOfWork
    pipeline: str
    start: datetime
    end: datetime
    consecutive: int
    channels: list[str]
    now: datetime

    def over(self, f: Finding) -> AlertChange | None:
        """A window over a threshold of ``f.check``."""
        alerts = self.uow.alerts
        level: AlertLevel = "alert" if f.level == "alert" else "warn"
        live = alerts.live(self.pipeline, f.check)
        if live is None:
            latest = alerts.latest(self.pipeline, f.check)
            if latest is not None and latest.last_window >= self.start:
                return None  # an episode has judged this window (or a later one) already
            details = self._details(f, {"peak_level": level, "peak_value": _number(f.value)})
            started = alerts.start(
                self.pipeline, f.check, f.kind, level, self.start, _number(f.value),
                _number(f.threshold), f.message, details,
            )  # fmt: skip
            if started is not None:
                return self._after_count(started, level)
            live = alerts.live(self.pipeline, f.check)  # another monitor started it first
            if live is None:
                return None
        if live.last_window >= self.start:
            return None
        kept = {k: live.details[k] for k in _KEPT if k in live.details}
        if LEVELS[level] > LEVELS[str(kept.get("peak_level", "warn"))] or (
            level == kept.get("peak_level")
            and (_number(f.value) or 0.0) > (_number(kept.get("peak_value")) or 0.0)
        ):
            kept |= {"peak_level": level, "peak_value": _number(f.value)}
        escalates = (
            live.status == "open"
            and level == "alert"
            and kept.get("opened_level") == "warn"
            and "escalated_window" not in kept
        )
        if escalates:
            kept["escalated_window"] = self.start.isoformat()
        extended = alerts.extend(
            live.id, self.start, level, _number(f.value), _number(f.threshold), f.message,
            self._details(f, kept),
        )  # fmt: skip
        if extended is None:
            return None  # another monitor counted this window
        if live.status == "open":
            if escalates:
                channels = [escalation_channel(c) for c in self.channels]
                queued = alerts.enqueue(extended.id, "opened", channels, self.now)
                return AlertChange("escalated", extended, len(queued))
            return AlertChange("still_open", extended)
        return self._after_count(extended, level)

    def _after_count(self, alert: AlertRecord, level: AlertLevel) -> AlertChange:
        """Open a pending episode whose streak has reached ``consecutive``."""
        if alert.streak < self.consecutive:
            return AlertChange("pending", alert)
        opened = self.uow.alerts.open(alert.id, self.now)
        if opened is None:  # pragma: no cover - the window's CAS above admits one monitor
            return AlertChange("still_open", alert)
        opened = self.uow.alerts.set_details(opened.id, {**opened.details, "opened_level": level})
        queued = self.uow.alerts.enqueue(opened.id, "opened", self.channels, self.now)
        return AlertChange("opened", opened, len(queued))

    def within(self, f: Finding) -> AlertChange | None:
        """A window in which ``f.check`` is within its thresholds."""
        alerts = self.uow.alerts
        live = alerts.live(self.pipeline, f.check)
        if live is None or live.last_window >= self.start:
            return None
        resolved = alerts.resolve(live.id, self.start, self.now)
        if resolved is None:
            return None
        if live.status == "pending":
            return AlertChange("dropped", resolved)
        queued = alerts.enqueue(resolved.id, "resolved", self.channels, self.now)
        return AlertChange("resolved", resolved, len(queued))

    def _details(self, f: Finding, kept: dict[str, Any]) -> dict[str, Any]:
        window = {"window_start": self.start.isoformat(), "window_end": self.end.isoformat()}
        where = {"segment": f.segment, "feature": f.feature, "version": f.version}
        return _plain({**f.details, **where, **window, **kept})


def _number(value: Any) -> float | None:
    """A finite float, or None (NaN has no place in a stored figure or in JSON)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _plain(value: Any) -> Any:
    """``value`` as JSON the metadata store accepts on every backend (PostgreSQL's JSON
    refuses NaN): non-finite floats become null, datetimes ISO text."""
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
