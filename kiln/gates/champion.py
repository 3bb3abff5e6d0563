"""Champion/challenger: the candidate and the production version scored on the same rows (the
candidate's holdout), overall and per segment.

Overall, the candidate fails where its primary metric regresses by more than the tolerance (a
strict point comparison). Per segment, a handful of rows scores better or worse by chance, so
each segment's regression gets a paired bootstrap interval (``kiln.pipeline.compare``): the
segment fails only when the whole interval lies beyond the tolerance, and is reported as
inconclusive when the interval straddles it. A segment that production answers with its own
model but the candidate leaves to its fallback is *lost*, and fails by default; one the
candidate routes to its fallback because its own model scored worse than the fallback
(``segments.route_worse_to_fallback``) is the candidate's choice, and a note.

A candidate refit on its holdout (``evaluation.refit``) cannot be scored on those rows: its side
is then the holdout metrics of its first fit, recorded in its manifest (the segment models', the
fallback's for a segment it serves by the fallback, and overall), and only the champion is scored
on the rows. Per segment that is a point comparison against the tolerance (no interval: the
first fit's answers are not kept).

A multiclass candidate is scored on its class probabilities (its primary metric is logloss unless
configured); the champion's probabilities are matched to the candidate's classes by name (a
class the champion does not know has probability 0 for it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kiln.config.deploy import ChampionChallengerGate as ChampionPolicy
from kiln.gates.base import GateContext, GateResult, on_classes, routed_as_worse, target_std
from kiln.pipeline.compare import (
    SegmentComparison,
    Verdict,
    compare_segments,
    relative_change,
)
from kiln.pipeline.metrics import HIGHER_IS_BETTER, score
from kiln.pipeline.target_changes import changed_targets
from kiln.registry import Prediction
from kiln.registry.version import Version
from kiln.runs.data import encode_labels, target_labels

__all__ = ["ChampionChallengerGate", "first_fit_metrics", "lost_segments", "target_spread"]

NO_INTERVAL = "interval not available: refit candidate"


class ChampionChallengerGate:
    name = "champion_challenger"

    def evaluate(
        self, candidate: Version, champion: Version | None, context: GateContext
    ) -> GateResult:
        if champion is None:
            return GateResult(
                self.name, "skipped", "no production version to compare with (first release)"
            )
        policy = candidate.policy.gates.champion_challenger
        cfg = candidate.loaded.config
        metric = candidate.predictor.manifest.get("metrics", {}).get("primary", cfg.primary_metric)
        rows = candidate.holdout
        absent = [f for f in champion.features if f not in rows.columns]
        if absent:
            return GateResult(
                self.name,
                "failed",
                f"the candidate's data has no {', '.join(absent)}: champion"
                f" v{champion.number} cannot be scored on the same rows (keep the column in"
                " data.query, or override)",
                {"absent": absent, "champion_version": champion.number},
            )
        classes = candidate.predictor.classes
        both_multiclass = candidate.predictor.multiclass and champion.predictor.multiclass
        if classes != champion.predictor.classes and not both_multiclass:
            return GateResult(
                self.name,
                "failed",
                f"champion v{champion.number} answers {_classes(champion)}, the candidate"
                f" {_classes(candidate)}: they cannot be scored on the same target (override to"
                " release the change of target)",
                {
                    "candidate_classes": classes,
                    "champion_classes": champion.predictor.classes,
                    "champion_version": champion.number,
                },
            )
        y, cand, champ = _scored(candidate, champion, rows[cfg.target.column])
        groups = _groups(rows, candidate.predictor.segment_column)
        higher = HIGHER_IS_BETTER[metric]
        refit = saw_holdout(candidate)
        p = score([metric], y, champ)[metric]
        c, compared = _candidate_side(
            candidate, metric, y, cand, champ, groups=groups, policy=policy, refit=refit
        )
        change = relative_change(c, p, higher=higher)
        overall = {
            "rows": len(rows),
            "candidate": c,
            "champion": p,
            "regression": None if change is None else round(change, 6),
            "regressed": change is not None and change > policy.tolerance,
        }
        table = {key: _row(s, refit=refit) for key, s in compared.items()}
        regressed = [k for k, s in compared.items() if s.verdict == "regressed"]
        inconclusive = [k for k, s in compared.items() if s.verdict == "inconclusive"]
        lost = lost_segments(candidate, champion, groups)
        chosen = {
            seg: reason
            for seg, reason in routed_as_worse(candidate.manifest).items()
            if seg in champion.predictor.segments
        }
        target_evidence, target_problems = _target_checks(candidate, champion, policy)
        evidence = {
            "metric": metric,
            "higher_is_better": higher,
            "tolerance": policy.tolerance,
            "confidence": policy.confidence,
            "resamples": policy.resamples,
            "min_rows": policy.min_rows,
            "candidate_version": candidate.number,
            "champion_version": champion.number,
            "holdout_rows": len(rows),
            "overall": overall,
            "segments": table,
            "regressed_segments": regressed,
            "inconclusive_segments": inconclusive,
            "lost_segments": lost,
            "fail_on_lost_segments": policy.fail_on_lost_segments,
            "routed_as_worse": chosen,
            "candidate_side": "first fit (evaluation.refit: the served models saw the holdout)"
            if refit
            else "the served models",
            **target_evidence,
        }
        side = " (its first fit's, before refit)" if refit else ""
        head = (
            f"{metric} {c:.4g}{side} vs champion v{champion.number} {p:.4g} on {len(rows)}"
            " holdout rows"
            if c is not None and p is not None
            else f"{metric} undefined on the holdout"
        )
        problems: list[str] = []
        named = ["overall"] * bool(overall["regressed"]) + regressed
        if named:
            problems.append(f"regressed beyond {policy.tolerance:.1%} in: {', '.join(named)}")
        if lost and policy.fail_on_lost_segments:
            problems.append(_lost_text(lost, champion))
        problems += target_problems
        notes: list[str] = []
        if refit:
            notes.append(
                f"the candidate's side is its first fit's holdout metrics (evaluation.refit: its"
                f" served models saw these rows); per segment a point comparison ({NO_INTERVAL})"
            )
        if chosen:
            named_chosen = ", ".join(f"{seg} ({reason})" for seg, reason in chosen.items())
            notes.append(
                "served by the fallback by the candidate's choice"
                f" (segments.route_worse_to_fallback): {named_chosen}"
            )
        if inconclusive:
            notes.append(
                f"inconclusive (interval straddles {policy.tolerance:.1%}, not judged):"
                f" {', '.join(inconclusive)}"
            )
        if lost and not policy.fail_on_lost_segments:
            notes.append(_lost_text(lost, champion))
        if problems:
            return GateResult(self.name, "failed", "; ".join([head, *problems, *notes]), evidence)
        return GateResult(
            self.name, "passed", "; ".join([head, "no segment regressed", *notes]), evidence
        )


def lost_segments(
    candidate: Version, champion: Version, groups: dict[str, np.ndarray] | None = None
) -> dict[str, dict[str, Any]]:
    """The segments that ``champion`` answers with its own model and ``candidate`` leaves to
    its fallback, but for those it routes there because their model scored worse: why (the
    candidate's routing reason, or absent from its data), and the rows of each in the
    candidate's holdout and in the champion's training."""
    mine = set(candidate.predictor.segments) | set(routed_as_worse(candidate.manifest))
    routed = candidate.manifest.get("routed_to_fallback") or {}
    models = champion.manifest.get("models") or {}
    out: dict[str, dict[str, Any]] = {}
    for seg in sorted(set(champion.predictor.segments) - mine):
        rows = None if groups is None else len(groups.get(seg, ()))
        if seg in routed:
            reason = f"routed to the fallback: {routed[seg].get('reason')}"
        elif rows == 0:
            reason = "absent from the candidate's data"
        else:
            reason = "no segment model in the candidate"
        out[seg] = {
            "reason": reason,
            "candidate_holdout_rows": rows,
            "champion_rows_train": (models.get(seg) or {}).get("rows_train"),
        }
    return out


def _target_checks(
    candidate: Version, champion: Version, policy: ChampionPolicy
) -> tuple[dict[str, Any], list[str]]:
    """The target's own checks: changed on the rows both versions' data hold, and (opt-in) its
    spread at training; their evidence and problems."""
    spread = target_spread(candidate, champion)
    moved = spread.get("change")
    limit = policy.max_target_spread_change
    spread_moved = limit is not None and moved is not None and abs(moved) > limit
    changed, problem = _target_check(candidate, champion, policy.max_target_changed_share)
    problems = [] if problem is None else [problem]
    if spread_moved and moved is not None:
        problems.append(
            f"the target's standard deviation at training moved {moved:+.1%}"
            f" ({spread['champion']:.4g} in v{champion.number}, {spread['candidate']:.4g}"
            f" in v{candidate.number}; at most {limit:.0%}): check the target column for"
            " scaled or converted values, or override"
        )
    evidence = {
        "target_spread": spread | {"max_change": limit, "moved": spread_moved},
        "target_changes": changed,
    }
    return evidence, problems


def _target_check(
    candidate: Version, champion: Version, limit: float | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The evidence of how many rows both versions' data hold carry another target now, and the
    problem when more than ``limit`` of them do (None, None: the check is off)."""
    target = candidate.loaded.config.target.column
    if limit is None or target != champion.loaded.config.target.column:
        return None, None
    changes = changed_targets(champion.rows, candidate.rows, target)
    failed = changes.share is not None and changes.share > limit
    evidence = changes.as_evidence() | {"max_share": limit, "failed": failed}
    if not failed or changes.share is None:
        return evidence, None
    example = changes.examples[0] if changes.examples else None
    shown = (
        f", e.g. {example['before']} -> {example['after']} for {example['row']}" if example else ""
    )
    return evidence, (
        f"the target differs on {changes.share:.1%} of the {changes.matched:,} rows that"
        f" v{champion.number}'s data and the candidate's both hold (at most {limit:.1%}{shown}):"
        " a target scaled, converted or re-labelled in data.query or at the source; fix the"
        " data, or override"
    )


def target_spread(candidate: Version, champion: Version) -> dict[str, float | None]:
    """The standard deviation of the target over each version's training rows (its reference
    profile) and the candidate's relative change."""
    cand, champ = target_std(candidate), target_std(champion)
    change = None if cand is None or not champ else cand / champ - 1.0
    return {
        "candidate": cand,
        "champion": champ,
        "change": None if change is None else round(change, 6),
    }


def _lost_text(lost: dict[str, dict[str, Any]], champion: Version) -> str:
    named = ", ".join(f"{seg} ({info['reason']})" for seg, info in lost.items())
    return f"segments with their own model in v{champion.number} left to the fallback: {named}"


def saw_holdout(version: Version) -> bool:
    """Whether the version's served models were refit on its holdout rows."""
    evaluation = version.manifest.get("evaluation") or {}
    if "served_model_saw_holdout" in evaluation:
        return bool(evaluation["served_model_saw_holdout"])
    return bool(version.record.lineage.get("refit"))


def first_fit_metrics(version: Version) -> dict[str, Any]:
    """The holdout metrics of the version's first fit, as its manifest records them:
    ``overall`` (the routed answers) and, per segment, those of the model that answers it
    (its own, or the fallback's on its rows)."""
    m = version.manifest
    segments: dict[str, dict[str, Any]] = {}
    for seg, info in (m.get("routed_to_fallback") or {}).items():
        segments[str(seg)] = info.get("fallback_metrics") or {}
    for seg, ref in (m.get("models") or {}).items():
        segments[str(seg)] = ref.get("metrics") or {}
    return {"overall": (m.get("metrics") or {}).get("overall") or {}, "segments": segments}


def _candidate_side(
    candidate: Version,
    metric: str,
    y: np.ndarray,
    cand: np.ndarray,
    champ: np.ndarray,
    *,
    groups: dict[str, np.ndarray],
    policy: ChampionPolicy,
    refit: bool,
) -> tuple[float | None, dict[str, SegmentComparison]]:
    """The candidate's overall metric and the per-segment comparisons: scored on the holdout,
    or (``refit``) its first fit's metrics from the manifest, compared point by point."""
    if refit:
        first = first_fit_metrics(candidate)
        compared = _point_comparisons(metric, first["segments"], y, champ, groups, policy=policy)
        return first["overall"].get(metric), compared
    compared = compare_segments(
        metric,
        y,
        cand,
        champ,
        groups,
        tolerance=policy.tolerance,
        min_rows=policy.min_rows,
        confidence=policy.confidence,
        resamples=policy.resamples,
    )
    return score([metric], y, cand)[metric], compared


def _point_comparisons(
    metric: str,
    recorded: dict[str, dict[str, Any]],
    y: np.ndarray,
    champ: np.ndarray,
    groups: dict[str, np.ndarray],
    *,
    policy: ChampionPolicy,
) -> dict[str, SegmentComparison]:
    """Per segment, the candidate's recorded metric against the champion's on the segment's
    rows: regressed when the change is beyond the tolerance (no interval)."""
    tolerance, min_rows = policy.tolerance, policy.min_rows
    higher = HIGHER_IS_BETTER[metric]
    out: dict[str, SegmentComparison] = {}
    for name, idx in groups.items():
        value = recorded.get(name, {}).get(metric)
        c = float(value) if isinstance(value, int | float) else None
        p = score([metric], y[idx], champ[idx])[metric]
        change = relative_change(c, p, higher=higher)
        if change is None or len(idx) < min_rows:
            out[name] = SegmentComparison(len(idx), c, p, change, None, "not judged")
        else:
            verdict: Verdict = "regressed" if change > tolerance else "ok"
            out[name] = SegmentComparison(len(idx), c, p, change, None, verdict)
    return out


def _row(s: SegmentComparison, *, refit: bool = False) -> dict[str, Any]:
    return {
        "rows": s.rows,
        "candidate": s.candidate,
        "champion": s.champion,
        "regression": None if s.change is None else round(s.change, 6),
        "interval": None if s.interval is None else [round(v, 6) for v in s.interval],
        **({"interval_note": NO_INTERVAL} if refit else {}),
        "verdict": s.verdict,
        "judged": s.verdict in ("regressed", "ok"),
        "regressed": s.verdict == "regressed",
    }


def _scored(
    candidate: Version, champion: Version, target: pd.Series
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The truth and both versions' answers on the holdout rows (a multiclass candidate: class
    probabilities in the order of its classes)."""
    rows = candidate.holdout
    classes = candidate.predictor.classes
    y = _truth(target) if classes is None else encode_labels(target_labels(target), classes)
    if classes is not None and candidate.predictor.multiclass:
        cand = _probabilities(candidate.predictor.predict(rows), classes)
        champ = _probabilities(champion.predictor.predict(rows), classes)
    else:
        cand = candidate.predictor.predict(rows).values
        champ = champion.predictor.predict(rows).values
    return y, cand, champ


def _groups(rows: pd.DataFrame, segment_column: str | None) -> dict[str, np.ndarray]:
    groups: dict[str, np.ndarray] = {}
    if segment_column is not None and segment_column in rows.columns:
        keys = rows[segment_column].astype("string").fillna("<null>")
        for key, idx in keys.groupby(keys).indices.items():
            groups[str(key)] = np.asarray(idx)
    return groups


def _probabilities(prediction: Prediction, classes: list[str]) -> np.ndarray:
    """The class probabilities in the order of ``classes`` (0 for a class the model lacks)."""
    return on_classes(prediction.probabilities, prediction.classes or classes, classes)


def _classes(version: Version) -> str:
    classes = version.predictor.classes
    if classes is None:
        return "a number" if version.predictor.task == "regression" else "P(1) of a 0/1 target"
    if version.predictor.multiclass:
        return f"the classes {classes}"
    return f"P({classes[1]}) of the labels {classes}"


def _truth(column: pd.Series) -> np.ndarray:
    return column.astype("float64").to_numpy(dtype=np.float64)
