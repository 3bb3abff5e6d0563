"""The replay gate: would the candidate answer the requests that production answered?

It reads the last ``window`` production requests of the pipeline from the capture store, keeps
those production answered, and checks each against the candidate's feature schema the way the
server would check it (every feature and the segment column present, each value of its kind,
no unknown key; that checking is ``kiln.gates._requests``). A request the server would refuse,
or one the candidate answers with a non-finite number or outside its allowed range, fails on
the candidate, with its reason. The others are predicted in one batch and their answers
compared with production's, per segment and overall (a multiclass candidate's answer to a
request moved by the largest change of any class probability, max |Δp| over the classes, always
>= 0; production's probabilities are matched to the candidate's classes by name, and a request
production answered without them is replayed but not compared). :func:`replay` is that work as
a pure function over a captures table (the benchmark times it); :class:`ReplayGate` reads the
captures and the policy and judges.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kiln.gates._requests import (
    Problems,
    parse_requests,
    refuse_unseen,
    request_columns,
    request_frame,
    request_kinds,
)
from kiln.gates.base import (
    MAX_EXAMPLES,
    GateContext,
    GateResult,
    GateStatus,
    allowed_range,
    capture_span,
    on_classes,
    routed_as_worse,
    tolerance,
)
from kiln.registry.predictor import Predictor
from kiln.registry.version import Version

__all__ = ["DiffStats", "ReplayGate", "ReplayReport", "replay", "tolerance"]

_NO_SEGMENT = "(null)"
_REASONS_SHOWN = 20


@dataclass(frozen=True)
class DiffStats:
    """How far the candidate's answers are from production's on the same requests."""

    requests: int
    mean_abs_diff: float | None
    max_abs_diff: float | None
    mean_diff: float | None
    """Candidate minus production, on average (the sign says which way answers moved)."""
    beyond: int | None = None
    """Requests whose answer moved more than ``max_abs_diff`` (None: no tolerance set)."""
    share_beyond: float | None = None

    @classmethod
    def of(cls, diff: np.ndarray, max_abs_diff: float | None) -> DiffStats:
        n = int(diff.size)
        if n == 0:
            return cls(0, None, None, None, 0 if max_abs_diff is not None else None, None)
        absolute = np.abs(diff)
        beyond = None if max_abs_diff is None else int((absolute > max_abs_diff).sum())
        return cls(
            requests=n,
            mean_abs_diff=float(absolute.mean()),
            max_abs_diff=float(absolute.max()),
            mean_diff=float(diff.mean()),
            beyond=beyond,
            share_beyond=None if beyond is None else beyond / n,
        )

    def as_evidence(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReplayReport:
    """What replaying captured requests on one predictor found (counts are complete; the
    failing requests listed are the first ``MAX_EXAMPLES``)."""

    captured: int
    """Rows of the captures table."""
    replayed: int
    """Of those, the requests production answered: the ones replayed."""
    failed: int
    """Replayed requests that fail on the candidate (refused, or a bad answer)."""
    overall: DiffStats
    segments: dict[str, DiffStats]
    """Per value of the candidate's segment column (empty when it has none)."""
    segment_column: str | None
    reasons: dict[str, int] = field(default_factory=dict)
    """Failing requests per problem, most frequent first."""
    failures: list[dict[str, Any]] = field(default_factory=list)
    """Up to ``MAX_EXAMPLES`` failing requests: request_id, reason, features."""
    production_versions: dict[int, int] = field(default_factory=dict)
    """Replayed requests per production version that answered them."""
    fallback_segments: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per segment (as production named it): the requests that production answered with the
    segment's own model and the candidate answers from its fallback, of those compared (not
    counting the two below)."""
    routed_as_worse: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Of those, per segment the candidate serves by its fallback because its own model scored
    worse (``segments.route_worse_to_fallback``): the reason and the requests."""
    unseen_fallback: int = 0
    """Compared requests the candidate answers by its fallback because they hold an unseen
    category (``unseen_categories: fallback``), not because of their segment."""
    classes: list[str] | None = None
    """A multiclass candidate's classes: the diffs are then max |Δp| over them."""

    def as_evidence(self) -> dict[str, Any]:
        multiclass = {} if self.classes is None else {
            "classes": self.classes, "diff_of_a_request": "max |Δp| over the classes"
        }  # fmt: skip
        return multiclass | {
            "captured": self.captured,
            "replayed": self.replayed,
            "failed": self.failed,
            "compared": self.overall.requests,
            "reasons": self.reasons,
            "failures": self.failures,
            "diff": self.overall.as_evidence(),
            "segment_column": self.segment_column,
            "segments": {k: s.as_evidence() for k, s in self.segments.items()},
            "fallback_segments": self.fallback_segments,
            "routed_as_worse": self.routed_as_worse,
            "unseen_fallback": self.unseen_fallback,
        }


def replay(
    predictor: Predictor,
    captures: pa.Table,
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
    max_abs_diff: float | None = None,
) -> ReplayReport:
    """Replay the requests of ``captures`` that production answered on ``predictor``.

    ``captures`` has the capture columns (request_id, features, prediction, version at least);
    an answer outside ``[lo, hi]`` or not finite fails its request, and ``max_abs_diff`` (when
    set) counts the answers that moved more than it.
    """
    answered = captures.filter(pc.is_valid(captures["prediction"]))
    n = answered.num_rows
    ids: list[str] = answered["request_id"].to_pylist()
    production = answered["prediction"].to_numpy(zero_copy_only=False).astype(np.float64)
    versions = Counter(answered["version"].to_pylist())

    texts: list[str] = answered["features"].to_pylist()
    rows, problems = parse_requests(texts)
    kinds = request_kinds(predictor)
    valid, columns = request_columns(rows, kinds, problems)
    frame, valid = request_frame(columns, valid, kinds, problems)
    frame, valid = refuse_unseen(frame, valid, predictor, problems)

    diff = np.empty(0)
    keys: np.ndarray | None = None
    moved_to_fallback: dict[str, dict[str, int]] = {}
    chosen: dict[str, dict[str, Any]] = {}
    unseen_fallback = 0
    classes = predictor.classes if predictor.multiclass else None
    if valid.size:
        answers, fell_back, unseen, proba, failure = _predict(predictor, frame)
        if failure is not None:
            for i in valid.tolist():
                problems.setdefault(i, []).append((failure, None))
            valid = valid[:0]
        else:
            good = _check_answers(answers, valid, lo, hi, problems)
            valid, answers = valid[good], answers[good]
            compared = good
            if proba is None or classes is None:
                diff = answers - production[valid]
            else:
                before = _production_probabilities(answered, valid, classes)
                diff = np.abs(proba[good] - before).max(axis=1)
                known = ~np.isnan(diff)
                diff, compared = diff[known], np.flatnonzero(good)[known]
            for_unseen = fell_back[good] & unseen[good] & (predictor.unseen_policy == "fallback")
            unseen_fallback = int(for_unseen.sum())
            moved_to_fallback = _moved_to_fallback(answered, valid, fell_back[good] & ~for_unseen)
            worse = routed_as_worse(predictor.manifest)
            for seg in sorted(set(moved_to_fallback) & set(worse)):
                chosen[seg] = {"reason": worse[seg], **moved_to_fallback.pop(seg)}
            col = predictor.segment_column
            if col is not None:
                keys = _segment_names(frame[col])[compared]

    overall = DiffStats.of(diff, max_abs_diff)
    segments = {} if keys is None else _per_segment(keys, diff, max_abs_diff)
    failed = sorted(problems)
    reasons = Counter(key for i in failed for key, _ in problems[i])
    return ReplayReport(
        captured=captures.num_rows,
        replayed=n,
        failed=len(failed),
        overall=overall,
        segments=segments,
        segment_column=predictor.segment_column,
        reasons=dict(reasons.most_common(_REASONS_SHOWN)),
        failures=[
            {
                "request_id": ids[i],
                "reason": _reason(problems[i]),
                "features": texts[i] if rows[i] is None else rows[i],
            }
            for i in failed[:MAX_EXAMPLES]
        ],
        production_versions={int(v): c for v, c in sorted(versions.items())},
        fallback_segments=moved_to_fallback,
        routed_as_worse=chosen,
        unseen_fallback=unseen_fallback,
        classes=classes,
    )


# -- checking the candidate's answers ---------------------------------------------------------


def _predict(
    predictor: Predictor, frame: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, str | None]:
    """The candidate's answers, which came from its fallback, which held an unseen category
    (and a multiclass one's class probabilities), or the reason every request fails when it
    raises."""
    try:
        prediction = predictor.predict(frame)
    except Exception as e:  # a crashing candidate is a failing one: evidence, not an outage
        failure = f"the candidate raised {type(e).__name__}: {e}"
        none = np.empty(0, dtype=bool)
        return np.empty(0), none, none, None, failure
    values = np.asarray(prediction.values, dtype=np.float64)
    n = len(values)
    unseen = np.zeros(n, dtype=bool)
    if prediction.unseen is not None:
        unseen = np.fromiter((bool(u) for u in prediction.unseen), dtype=bool, count=n)
    fell_back = np.asarray(prediction.fallback, dtype=bool)
    return values, fell_back, unseen, prediction.probabilities, None


def _moved_to_fallback(
    answered: pa.Table, compared: np.ndarray, fell_back: np.ndarray
) -> dict[str, dict[str, int]]:
    """Per segment that production answered with its own model (the capture's ``segment`` and
    ``fallback`` columns): of its requests compared, those the candidate's fallback answers."""
    if "fallback" not in answered.column_names or "segment" not in answered.column_names:
        return {}
    own = ~answered["fallback"].to_numpy(zero_copy_only=False).astype(bool)[compared]
    if not (own & fell_back).any():
        return {}
    names = _segment_names(answered["segment"].to_pandas())[compared]
    out: dict[str, dict[str, int]] = {}
    for name in sorted(set(names[own & fell_back].tolist())):
        mine = own & (names == name)
        out[str(name)] = {"requests": int((mine & fell_back).sum()), "compared": int(mine.sum())}
    return out


def _production_probabilities(
    answered: pa.Table, rows: np.ndarray, classes: list[str]
) -> np.ndarray:
    """Production's class probabilities of the captures ``rows``, in the order of ``classes``
    (0 for a class production did not know; NaN for a row captured without probabilities)."""
    out = np.full((len(rows), len(classes)), np.nan)
    if "probabilities" not in answered.column_names:
        return out
    captured = answered["probabilities"].take(pa.array(rows, pa.int64())).to_pylist()
    by_own: dict[tuple[str, ...], list[int]] = {}  # rows by the classes they were captured with
    for i, pairs in enumerate(captured):
        if pairs is not None:
            by_own.setdefault(tuple(name for name, _ in pairs), []).append(i)
    for own, idx in by_own.items():
        values = [[np.nan if p is None else p for _, p in captured[i]] for i in idx]
        out[idx] = on_classes(values, own, classes)
    return out


def _check_answers(
    answers: np.ndarray, valid: np.ndarray, lo: float, hi: float, problems: Problems
) -> np.ndarray:
    """A mask of the good answers; a non-finite one, or one outside [lo, hi], is a problem."""
    finite = np.isfinite(answers)
    inside = finite & (answers >= lo) & (answers <= hi)
    if inside.all():
        return inside
    allowed = f"[{_number(lo)}, {_number(hi)}]"
    for j in np.flatnonzero(~inside).tolist():
        v = float(answers[j])
        if finite[j]:
            problem, got = f"answer outside the allowed range {allowed}", f"{v:.6g}"
        else:
            problem, got = "answer is not a finite number", str(v)
        problems.setdefault(int(valid[j]), []).append((problem, got))
    return inside


def _segment_names(column: pd.Series) -> np.ndarray:
    """The segment of each request, named as training named it (nulls as ``(null)``)."""
    names = column.astype("string").fillna(_NO_SEGMENT)
    return names.to_numpy(dtype=object)


def _per_segment(
    keys: np.ndarray, diff: np.ndarray, max_abs_diff: float | None
) -> dict[str, DiffStats]:
    codes, uniques = pd.factorize(keys, sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return {
        str(name): DiffStats.of(diff[order[bounds[k] : bounds[k + 1]]], max_abs_diff)
        for k, name in enumerate(uniques)
    }


def _reason(found: list[tuple[str, str | None]]) -> str:
    return "; ".join(p if got is None else f"{p}, got {got}" for p, got in found)


def _number(x: float) -> str | float:
    return x if math.isfinite(x) else ("-inf" if x < 0 else "inf")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# -- the gate ---------------------------------------------------------------------------------


class ReplayGate:
    """Fails when a production request fails on the candidate, when more than
    ``max_share_beyond`` of the answers moved more than the tolerance (``max_abs_diff``, else
    relative to the target's spread at training: :func:`tolerance`), or (by default) when
    requests that production answered with a segment's own model get the candidate's
    fallback."""

    name = "replay"

    def evaluate(
        self, candidate: Version, champion: Version | None, context: GateContext
    ) -> GateResult:
        policy = context.policy.gates.replay
        label = f"{candidate.label} of {candidate.pipeline!r}"
        if not policy.enabled:
            return self._result("skipped", "off (deploy.gates.replay.enabled: false)")
        captures = context.captures(candidate.pipeline, stage="production", last=policy.window)
        if captures is None or captures.num_rows == 0:
            return self._result(
                "skipped",
                f"no captured traffic yet: no production request of {candidate.pipeline!r} to"
                f" replay on {candidate.label} (the server captures requests when"
                " capture.sample_rate > 0)",
            )
        lo, hi = allowed_range(candidate)
        limit, source = tolerance(policy, candidate, champion)
        report = replay(candidate.predictor, captures, lo=lo, hi=hi, max_abs_diff=limit)
        evidence = {
            "versions": {
                "candidate": candidate.number,
                "champion": None if champion is None else champion.number,
                "production": {str(v): c for v, c in report.production_versions.items()},
            },
            "window": policy.window,
            "allowed_range": [_finite(lo), _finite(hi)],
            "max_abs_diff": limit,
            "max_abs_diff_source": source,
            "max_share_beyond": policy.max_share_beyond,
            "fail_on_fallback_segments": policy.fail_on_fallback_segments,
            **report.as_evidence(),
            **capture_span(captures),
        }
        if report.replayed == 0:
            return self._result(
                "skipped",
                f"none of the {report.captured:,} captured production requests was answered:"
                f" nothing to replay on {candidate.label}",
                evidence,
            )
        why: list[str] = []
        if report.failed:
            top = ", ".join(f"{r} ({c:,})" for r, c in list(report.reasons.items())[:3])
            why.append(
                f"{report.failed:,} of {report.replayed:,} production requests fail on {label}:"
                f" {top}"
            )
        share = report.overall.share_beyond
        if share is not None and share > policy.max_share_beyond:
            why.append(
                f"{share:.1%} of the answers moved more than {limit:.4g}"
                f" (at most {policy.max_share_beyond:.1%} may)"
                + ("" if policy.max_abs_diff is not None else f"; tolerance: {source}")
            )
        notes: list[str] = []
        if report.routed_as_worse:
            chosen = ", ".join(
                f"{seg} ({c['requests']:,} of {c['compared']:,}: {c['reason']})"
                for seg, c in report.routed_as_worse.items()
            )
            notes.append(
                "requests the candidate serves by its fallback by choice"
                f" (segments.route_worse_to_fallback): {chosen}"
            )
        if report.unseen_fallback:
            notes.append(
                f"{report.unseen_fallback:,} requests with an unseen category get the fallback"
                " (serving.unseen_categories: fallback)"
            )
        if report.fallback_segments:
            moved = ", ".join(
                f"{seg} ({c['requests']:,} of {c['compared']:,})"
                for seg, c in report.fallback_segments.items()
            )
            text = (
                f"requests production answered with a segment model now get the fallback: {moved}"
            )
            (why if policy.fail_on_fallback_segments else notes).append(text)
        if why:
            return self._result("failed", "; ".join(why + notes), evidence)
        replayed = f"{report.replayed:,} production requests replayed on {label}"
        text = "; ".join([_diff_text(report.overall, limit), *notes])
        return self._result("passed", f"{replayed}: {text}", evidence)

    def _result(
        self, status: GateStatus, summary: str, evidence: dict[str, Any] | None = None
    ) -> GateResult:
        return GateResult(self.name, status, summary, evidence or {})


def _diff_text(stats: DiffStats, max_abs_diff: float | None) -> str:
    if stats.mean_abs_diff is None or stats.max_abs_diff is None:
        return "no answer to compare"
    text = f"none failed; mean |diff| {stats.mean_abs_diff:.4g}, max {stats.max_abs_diff:.4g}"
    if max_abs_diff is not None and stats.share_beyond is not None:
        text += f", {stats.share_beyond:.1%} beyond {max_abs_diff:.4g}"
    return text
