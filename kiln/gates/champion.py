"""Champion/challenger: the candidate and the production version scored on the same rows (the
candidate's holdout), per segment; the candidate fails where its primary metric regresses by
more than the tolerance.

A multiclass candidate is scored on its class probabilities (its primary metric is logloss unless
configured); the champion's probabilities are matched to the candidate's classes by name (a
class the champion does not know has probability 0 for it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kiln.gates.base import GateContext, GateResult, Version
from kiln.pipeline.metrics import HIGHER_IS_BETTER, score
from kiln.registry import Prediction
from kiln.runs.data import encode_labels, target_labels

__all__ = ["ChampionChallengerGate"]

_ALL = "__overall__"


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
        if classes is None:
            y = _truth(rows[cfg.target.column])
        else:
            y = encode_labels(target_labels(rows[cfg.target.column]), classes)
        if classes is not None and candidate.predictor.multiclass:
            cand = _probabilities(candidate.predictor.predict(rows), classes)
            champ = _probabilities(champion.predictor.predict(rows), classes)
        else:
            cand = candidate.predictor.predict(rows).values
            champ = champion.predictor.predict(rows).values
        seg_col = candidate.predictor.segment_column
        groups: dict[str, np.ndarray] = {_ALL: np.arange(len(rows))}
        if seg_col is not None and seg_col in rows.columns:
            keys = rows[seg_col].astype("string").fillna("<null>")
            for key, idx in keys.groupby(keys).indices.items():
                groups[str(key)] = np.asarray(idx)
        higher = HIGHER_IS_BETTER[metric]
        table: dict[str, dict[str, Any]] = {}
        regressed: list[str] = []
        for key, idx in groups.items():
            c = score([metric], y[idx], cand[idx])[metric]
            p = score([metric], y[idx], champ[idx])[metric]
            change = _relative_change(c, p, higher=higher)
            judged = len(idx) >= policy.min_rows and change is not None
            worse = judged and change is not None and change > policy.tolerance
            table[key] = {
                "rows": len(idx),
                "candidate": c,
                "champion": p,
                "regression": None if change is None else round(change, 6),
                "judged": judged,
                "regressed": worse,
            }
            if worse:
                regressed.append(key)
        overall = table.pop(_ALL)
        evidence = {
            "metric": metric,
            "higher_is_better": higher,
            "tolerance": policy.tolerance,
            "min_rows": policy.min_rows,
            "candidate_version": candidate.number,
            "champion_version": champion.number,
            "holdout_rows": len(rows),
            "overall": overall,
            "segments": table,
            "regressed_segments": [k for k in regressed if k != _ALL],
        }
        head = (
            f"{metric} {overall['candidate']:.4g} vs champion v{champion.number}"
            f" {overall['champion']:.4g} on {len(rows)} holdout rows"
            if overall["candidate"] is not None and overall["champion"] is not None
            else f"{metric} undefined on the holdout"
        )
        if regressed:
            named = ", ".join("overall" if k == _ALL else k for k in regressed)
            return GateResult(
                self.name,
                "failed",
                f"{head}; regressed beyond {policy.tolerance:.1%} in: {named}",
                evidence,
            )
        return GateResult(self.name, "passed", f"{head}; no segment regressed", evidence)


def _probabilities(prediction: Prediction, classes: list[str]) -> np.ndarray:
    """The class probabilities in the order of ``classes`` (0 for a class the model lacks)."""
    proba = prediction.probabilities
    own = prediction.classes or []
    if proba is None or own == classes:
        return np.asarray(proba, dtype=np.float64)
    out = np.zeros((proba.shape[0], len(classes)), dtype=np.float64)
    for j, c in enumerate(own):
        if c in classes:
            out[:, classes.index(c)] = proba[:, j]
    return out


def _classes(version: Version) -> str:
    classes = version.predictor.classes
    if classes is None:
        return "a number" if version.predictor.task == "regression" else "P(1) of a 0/1 target"
    if version.predictor.multiclass:
        return f"the classes {classes}"
    return f"P({classes[1]}) of the labels {classes}"


def _truth(column: pd.Series) -> np.ndarray:
    return column.astype("float64").to_numpy(dtype=np.float64)


def _relative_change(cand: float | None, champ: float | None, *, higher: bool) -> float | None:
    """How much worse the candidate is, relative to the champion (negative: better)."""
    if cand is None or champ is None:
        return None
    worse_by = (champ - cand) if higher else (cand - champ)
    return worse_by / max(abs(champ), 1e-12)
