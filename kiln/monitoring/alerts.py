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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from kiln.monitoring.findings import LEVELS, Finding
from kiln.stores.metadata import UnitOfWork
from kiln.stores.metadata.alerts import AlertLevel, AlertRecord, Extension, NewEpisode
from kiln.stores.metadata.outbox import DeliveryEvent

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
    return step.run(_worst_per_check(findings))


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
    """One window's findings against the pipeline's episodes, in a few statements whatever
    the number of checks: read the live episodes and each check's last window; start the new
    episodes (one insert); extend the others (one executemany); open, resolve and drop with
    one compare-and-set each over all of them; queue the notifications (one insert). Each
    write is conditional on the window and status, so two monitors act once."""

    uow: UnitOfWork
    pipeline: str
    start: datetime
    end: datetime
    consecutive: int
    channels: list[str]
    now: datetime

    def run(self, found: dict[str, Finding]) -> list[AlertChange]:
        alerts = self.uow.alerts
        checks = list(found)
        live = alerts.live_map(self.pipeline, checks)
        seen = alerts.last_windows(self.pipeline, checks)
        fresh = [
            f for c, f in found.items()
            if _over(f) and c not in live and (c not in seen or seen[c] < self.start)
        ]  # fmt: skip
        started = alerts.start_many(self.pipeline, self.start, [self._new(f) for f in fresh])
        lost = [f.check for f in fresh if f.check not in started]
        if lost:  # another monitor started them first: theirs are the live ones
            live |= alerts.live_map(self.pipeline, lost)

        changes: dict[int, AlertChange] = {}
        extensions: list[Extension] = []
        to_open = [a.id for a in started.values()]
        escalate: list[int] = []
        resolve: dict[str, list[int]] = {"pending": [], "open": []}
        for a in started.values():
            changes[a.id] = AlertChange("pending", a)
        for check, f in found.items():
            episode = live.get(check)
            if check in started or episode is None or episode.last_window >= self.start:
                continue
            if not _over(f):
                resolve[episode.status].append(episode.id)
                continue
            ext, after, opens, escalates = self._extension(episode, f)
            extensions.append(ext)
            changes[episode.id] = AlertChange(
                "escalated" if escalates else "pending" if opens or after.status == "pending"
                else "still_open", after,
            )  # fmt: skip
            if opens:
                to_open.append(episode.id)
            if escalates:
                escalate.append(episode.id)
        alerts.extend_many(self.start, extensions)

        notify: list[tuple[int, DeliveryEvent, str]] = []
        for a in alerts.open_many(to_open, self.consecutive, self.now):
            changes[a.id] = AlertChange("opened", a)
            notify += [(a.id, "opened", c) for c in self.channels]
        for alert_id in escalate:
            notify += [(alert_id, "opened", escalation_channel(c)) for c in self.channels]
        for a in alerts.resolve_many(resolve["pending"], self.start, self.now, "pending"):
            changes[a.id] = AlertChange("dropped", a)
        for a in alerts.resolve_many(resolve["open"], self.start, self.now, "open"):
            changes[a.id] = AlertChange("resolved", a)
            notify += [(a.id, "resolved", c) for c in self.channels]
        queued = Counter(d.alert_id for d in self.uow.outbox.enqueue_many(notify, self.now))
        return [replace(c, queued=queued[i]) for i, c in sorted(changes.items())]

    def _new(self, f: Finding) -> NewEpisode:
        level = _level(f)
        kept: dict[str, Any] = {"peak_level": level, "peak_value": _number(f.value)}
        if self.consecutive <= 1:
            kept["opened_level"] = level
        return NewEpisode(
            f.check, f.kind, level, _number(f.value), _number(f.threshold), f.message,
            self._details(f, kept),
        )  # fmt: skip

    def _extension(
        self, live: AlertRecord, f: Finding
    ) -> tuple[Extension, AlertRecord, bool, bool]:
        """One more window over a threshold of a live episode: the extension, the episode
        after it, whether it opens it, whether it escalates it."""
        level = _level(f)
        kept = {k: live.details[k] for k in _KEPT if k in live.details}
        if LEVELS[level] > LEVELS[str(kept.get("peak_level", "warn"))] or (
            level == kept.get("peak_level")
            and (_number(f.value) or 0.0) > (_number(kept.get("peak_value")) or 0.0)
        ):
            kept |= {"peak_level": level, "peak_value": _number(f.value)}
        opens = live.status == "pending" and live.streak + 1 >= self.consecutive
        escalates = (
            live.status == "open"
            and level == "alert"
            and kept.get("opened_level") == "warn"
            and "escalated_window" not in kept
        )
        if opens:
            kept["opened_level"] = level
        if escalates:
            kept["escalated_window"] = self.start.isoformat()
        ext = Extension(
            live.id, level, _number(f.value), _number(f.threshold), f.message,
            self._details(f, kept),
        )  # fmt: skip
        after = replace(
            live, streak=live.streak + 1, last_window=self.start, level=ext.level,
            value=ext.value, threshold=ext.threshold, message=ext.message, details=ext.details,
        )  # fmt: skip
        return ext, after, opens, escalates

    def _details(self, f: Finding, kept: dict[str, Any]) -> dict[str, Any]:
        window = {"window_start": self.start.isoformat(), "window_end": self.end.isoformat()}
        where = {"segment": f.segment, "feature": f.feature, "version": f.version}
        return _plain({**f.details, **where, **window, **kept})


def _over(f: Finding) -> bool:
    return f.level in ("warn", "alert")


def _level(f: Finding) -> AlertLevel:
    return "alert" if f.level == "alert" else "warn"


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
