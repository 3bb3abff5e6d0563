"""The findings of a window: each figure that a threshold judges, as one :class:`Finding` with a
stable check key, the key alerts count consecutive windows of.

Checks: ``drift:<feature>:<segment>``, ``prediction:<segment>``,
``performance:<metric>:<segment>``, ``latency:p99`` and ``errors`` (segment ``__all__`` is a
version's whole traffic). A window that holds two versions (production and a canary) judges each
against its own reference; a check keeps the more severe of the two (its ``version`` says whose),
so an alert episode follows the figure, not the version. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from kiln.config.monitor import MonitorConfig, Thresholds
from kiln.monitoring.findings import (
    ALL,
    LEVELS,
    PREDICTION,
    FeatureDrift,
    Finding,
    LatencyRow,
    Level,
    PerformanceRow,
)

__all__ = [
    "alert_findings",
    "drift_findings",
    "judge",
    "latency_findings",
    "performance_findings",
    "worst_per_check",
]


def judge(value: float | None, warn: float, alert: float) -> Level:
    """``alert`` at or over ``alert``, ``warn`` at or over ``warn``, else ``ok``; no value:
    ``unjudged``."""
    if value is None:
        return "unjudged"
    if value >= alert:
        return "alert"
    return "warn" if value >= warn else "ok"


def _passed(level: str, warn: float | None, alert: float | None) -> float | None:
    return alert if level == "alert" else warn


def drift_findings(rows: Iterable[FeatureDrift]) -> list[Finding]:
    found = []
    for r in rows:
        prediction = r.feature == PREDICTION
        check = f"prediction:{r.segment}" if prediction else f"drift:{r.feature}:{r.segment}"
        what = "the prediction" if prediction else r.feature
        where = "all segments" if r.segment == ALL else f"segment {r.segment}"
        if r.missing:
            message = f"{what} is absent from the traffic of {where} (v{r.version})"
        elif r.value is None:
            message = (
                f"{what} in {where} (v{r.version}): {r.rows} rows, too few to judge"
                " (monitor.min_rows)"
            )
        else:
            message = (
                f"{what} in {where} (v{r.version}): {r.statistic} {r.value:.3g}"
                f" (warn {_num(r.warn)}, alert {_num(r.alert)}; {r.rows} rows)"
            )
        found.append(
            Finding(
                check=check,
                kind="drift",
                level=r.level,
                value=r.value,
                threshold=_passed(r.level, r.warn, r.alert),
                message=message,
                segment=r.segment,
                feature=r.feature,
                version=r.version,
                details={
                    "statistic": r.statistic,
                    "rows": r.rows,
                    "null_share": r.null_share,
                    "null_share_reference": r.null_share_reference,
                    "outside_range_share": r.outside_range_share,
                    "unseen": dict(r.unseen),
                    "missing": r.missing,
                },
            )
        )
    return found


def performance_findings(rows: Iterable[PerformanceRow], cfg: MonitorConfig) -> list[Finding]:
    p = cfg.performance
    found = []
    for r in rows:
        where = "all segments" if r.segment == ALL else f"segment {r.segment}"
        if r.value is None or r.change is None:
            message = (
                f"live {r.metric} of {where} (v{r.version}): {r.labelled} labelled requests,"
                f" too few to judge (monitor.performance.min_labels {p.min_labels})"
            )
        else:
            message = (
                f"live {r.metric} of {where} (v{r.version}) {r.value:.4g} against"
                f" {_num(r.reference)} in training: {r.change:+.1%}"
                f" ({r.labelled} labelled requests)"
            )
        found.append(
            Finding(
                check=f"performance:{r.metric}:{r.segment}",
                kind="performance",
                level=r.level,
                value=r.change,
                threshold=_passed(r.level, p.warn, p.alert),
                message=message,
                segment=r.segment,
                version=r.version,
                details={
                    "metric": r.metric,
                    "live": r.value,
                    "reference": r.reference,
                    "labelled": r.labelled,
                    "requests": r.requests,
                },
            )
        )
    return found


def latency_findings(rows: Iterable[LatencyRow], cfg: MonitorConfig) -> list[Finding]:
    """p99 latency (when ``monitor.latency.p99_ms`` is set) and the error rate of each version
    over all its segments; a version with fewer than ``monitor.min_rows`` requests is shown,
    not judged."""
    found = []
    for r in rows:
        if r.segment != ALL:
            continue
        thin = r.requests < cfg.min_rows
        rate = cfg.latency.error_rate
        level = "unjudged" if thin else judge(r.error_rate, rate.warn, rate.alert)
        found.append(
            Finding(
                check="errors",
                kind="errors",
                level=level,
                value=r.error_rate,
                threshold=_passed(level, rate.warn, rate.alert),
                message=f"error rate of v{r.version} {r.error_rate:.2%}"
                f" ({r.errors} of {r.requests} requests)" + (" (too few to judge)" if thin else ""),
                segment=ALL,
                version=r.version,
                details={"errors": r.errors, "requests": r.requests},
            )
        )
        p99: Thresholds | None = cfg.latency.p99_ms
        if p99 is None:
            continue
        level = "unjudged" if thin else judge(r.p99_ms, p99.warn, p99.alert)
        found.append(
            Finding(
                check="latency:p99",
                kind="latency",
                level=level,
                value=r.p99_ms,
                threshold=_passed(level, p99.warn, p99.alert),
                message=f"p99 latency of v{r.version} {_num(r.p99_ms)} ms"
                f" (p50 {_num(r.p50_ms)}, p95 {_num(r.p95_ms)}; {r.requests} requests)",
                segment=ALL,
                version=r.version,
                details={"p50_ms": r.p50_ms, "p95_ms": r.p95_ms, "requests": r.requests},
            )
        )
    return found


def worst_per_check(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per check: the most severe (the largest value among equals), most severe
    first."""
    best: dict[str, Finding] = {}
    for f in findings:
        held = best.get(f.check)
        if held is None or _rank(f) > _rank(held):
            best[f.check] = f
    return sorted(best.values(), key=lambda f: (-LEVELS[f.level], -(f.value or 0.0), f.check))


def alert_findings(findings: Iterable[Finding], alert_by: str) -> list[Finding]:
    """The findings alert episodes are kept for. ``alert_by`` ``segment``: every drift check as
    judged; ``feature``: one per feature (``drift:<feature>``, and ``prediction``) at the level
    of its worst segment; ``pipeline``: one for the inputs (``drift``) and one for the
    prediction (``prediction``). A grouped finding names what drifted in its message and lists
    every segment and feature over a threshold in ``details["figures"]``; the others pass."""
    if alert_by == "segment":
        return list(findings)
    groups: dict[str, list[Finding]] = {}
    out: list[Finding] = []
    for f in findings:
        if f.kind != "drift":
            out.append(f)
            continue
        prediction = f.feature == PREDICTION
        key = "prediction" if prediction else "drift"
        if alert_by == "feature" and not prediction:
            key = f"drift:{f.feature}"
        groups.setdefault(key, []).append(f)
    for check, members in groups.items():
        out.append(_grouped(check, members))
    return out


def _grouped(check: str, members: list[Finding]) -> Finding:
    head = max(members, key=_rank)
    over = sorted((f for f in members if f.level in ("warn", "alert")), key=_rank, reverse=True)
    if not over:
        return Finding(
            check=check, kind="drift", level=head.level, value=head.value,
            threshold=head.threshold, message=head.message, segment=head.segment,
            feature=head.feature, version=head.version,
        )  # fmt: skip
    named = ", ".join(
        f"{'prediction' if f.feature == PREDICTION else f.feature}"
        f"{'' if f.segment == ALL else ' @ ' + str(f.segment)} {_num(f.value)}"
        for f in over[:5]
    )
    more = f" and {len(over) - 5} more" if len(over) > 5 else ""
    return Finding(
        check=check,
        kind="drift",
        level=head.level,
        value=head.value,
        threshold=head.threshold,
        message=f"{len(over)} of {len(members)} drift figures over a threshold: {named}{more}"
        f" (worst: {head.message})",
        segment=head.segment,
        feature=head.feature,
        version=head.version,
        details={
            "figures": [
                {"feature": f.feature, "segment": f.segment, "level": f.level, "value": f.value}
                for f in over
            ],
            "judged": len(members),
        },
    )


def _rank(f: Finding) -> tuple[int, float]:
    return LEVELS[f.level], f.value if f.value is not None else float("-inf")


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"
