"""The failing segments and requests (or holdout rows) that a gate's evidence records, pulled
out for the version page, whichever gate wrote it (kiln.gates: champion_challenger, replay,
feature_availability, data_quality, shadow). Read by key: the registry never imports the gates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kiln.registry.compare import OVERALL

__all__ = ["FailingRequest", "FailingSegment", "failing_of"]


@dataclass(frozen=True)
class FailingSegment:
    segment: str
    why: str


@dataclass(frozen=True)
class FailingRequest:
    request_id: str
    """A captured request's id, or ``row N`` of the holdout."""
    reason: str
    detail: str
    """Its features (or answer) as compact JSON, cut at 500 characters."""


def failing_of(evidence: dict[str, Any]) -> tuple[list[FailingSegment], list[FailingRequest]]:
    """The failing segments and requests (or holdout rows) that a gate's evidence records,
    whichever gate wrote it (kiln.gates: champion_challenger, replay, feature_availability,
    data_quality, shadow)."""
    return _failing_segments(evidence), _failing_requests(evidence)


def _failing_segments(e: dict[str, Any]) -> list[FailingSegment]:
    out: list[FailingSegment] = []
    found = e.get("segments")
    table: dict[str, Any] = found if isinstance(found, dict) else {}
    overall = e.get("overall")
    if isinstance(overall, dict) and overall.get("regressed"):
        out.append(FailingSegment(OVERALL, _regression_text(e, overall)))
    for seg in _strings(e.get("regressed_segments")):
        out.append(FailingSegment(seg, _regression_text(e, table.get(seg) or {})))
    lost = e.get("lost_segments")
    if isinstance(lost, dict) and lost:
        for seg, info in lost.items():
            reason = info.get("reason") if isinstance(info, dict) else info
            out.append(FailingSegment(str(seg), f"lost: {reason}"))
    moved = e.get("fallback_segments")
    if isinstance(moved, dict):
        for seg, c in moved.items():
            if isinstance(c, dict):
                out.append(
                    FailingSegment(
                        str(seg),
                        f"{c.get('requests')} of {c.get('compared')} requests that production"
                        " answered with the segment's model now get the fallback",
                    )
                )
    by_segment, limit_share = e.get("fallback_by_segment"), e.get("max_fallback_share")
    most = float(limit_share) if isinstance(limit_share, int | float) else 1.0
    too_much = float(e.get("fallback_share") or 0) > most
    if isinstance(by_segment, dict) and too_much:  # data quality: too much left to the fallback
        for seg, part in by_segment.items():
            if isinstance(part, int | float) and part > most:
                out.append(
                    FailingSegment(
                        str(seg), f"{part:.0%} of its holdout rows answered by the fallback"
                    )
                )
    limit = e.get("max_abs_diff")
    share = e.get("max_share_beyond")
    for seg, s in table.items():
        if not isinstance(s, dict) or "share_beyond" not in s:
            continue
        beyond = s.get("share_beyond")
        if isinstance(beyond, int | float) and isinstance(share, int | float) and beyond > share:
            out.append(
                FailingSegment(
                    str(seg),
                    f"{beyond:.1%} of {s.get('requests')} answers moved more than {limit:.4g}",
                )
            )
    return out


def _regression_text(e: dict[str, Any], s: dict[str, Any]) -> str:
    metric = e.get("metric", "metric")
    change = s.get("regression")
    moved = "" if not isinstance(change, int | float) else f" ({change:+.1%} worse)"
    return (
        f"{metric} {_fmt(s.get('candidate'))} vs champion {_fmt(s.get('champion'))}{moved}"
        f" on {s.get('rows', '?')} rows"
    )


def _failing_requests(e: dict[str, Any]) -> list[FailingRequest]:
    out: list[FailingRequest] = []
    for f in e.get("failures") or []:  # replay
        if isinstance(f, dict):
            out.append(
                FailingRequest(
                    str(f.get("request_id")), str(f.get("reason")), _compact(f.get("features"))
                )
            )
    without = e.get("requests_without")  # feature availability
    if isinstance(without, dict):
        for feature, ids in without.items():
            for rid in _strings(ids):
                out.append(FailingRequest(rid, f"sent without {feature}", ""))
    for x in e.get("error_examples") or []:  # shadow
        if isinstance(x, dict):
            out.append(FailingRequest(str(x.get("request_id")), str(x.get("error")), ""))
    for x in e.get("examples") or []:  # data quality: holdout rows
        if isinstance(x, dict):
            detail = {k: v for k, v in x.items() if k != "row"}
            out.append(FailingRequest(f"row {x.get('row')}", "bad answer", _compact(detail)))
    return out


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _compact(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 500 else text[:500] + "…"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v if v is not None else "-")
