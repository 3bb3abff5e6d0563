"""Feature availability: every feature the candidate needs must reach it at serving time —
declared in ``deploy.gates.feature_availability.available``, or sent in every request that
production answered in the replay window."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pyarrow.compute as pc

from kiln.gates.base import MAX_EXAMPLES, GateContext, GateResult, capture_span
from kiln.registry.version import Version

__all__ = ["FeatureAvailabilityGate"]


class FeatureAvailabilityGate:
    name = "feature_availability"

    def evaluate(
        self, candidate: Version, champion: Version | None, context: GateContext
    ) -> GateResult:
        policy = candidate.policy.gates
        needed = candidate.features
        declared = policy.feature_availability.available
        window = policy.replay.window
        captures = context.captures(candidate.pipeline, stage="production", last=window)
        answered = None
        if captures is not None:
            answered = captures.filter(pc.is_valid(captures["prediction"]))
        if declared is None and (answered is None or answered.num_rows == 0):
            return GateResult(
                self.name,
                "skipped",
                "no captured traffic yet and no declared serving features",
                {"needed": needed},
            )
        sent: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        n = 0 if answered is None else answered.num_rows
        if answered is not None:
            ids = answered["request_id"].to_pylist()
            for rid, text in zip(ids, answered["features"].to_pylist(), strict=True):
                row = orjson.loads(text)
                sent.update(k for k in row if k in needed)
                for name in needed:
                    if name not in row and len(examples.setdefault(name, [])) < MAX_EXAMPLES:
                        examples[name].append(rid)
        declared_set = set(declared or [])
        report: dict[str, Any] = {}
        missing: list[str] = []
        for name in needed:
            share = sent[name] / n if n else None
            ok = name in declared_set or (n > 0 and sent[name] == n)
            report[name] = {
                "declared": name in declared_set,
                "sent_share": None if share is None else round(share, 6),
                "available": ok,
            }
            if not ok:
                missing.append(name)
        evidence = {
            "needed": needed,
            "declared": declared,
            "captured_requests": n,
            "features": report,
            "missing": missing,
            "requests_without": {k: v for k, v in examples.items() if k in missing},
            **capture_span(captures),
        }
        if missing:
            shares = ", ".join(
                f"{m} (sent in {report[m]['sent_share'] or 0:.0%} of {n} requests)" for m in missing
            )
            return GateResult(
                self.name,
                "failed",
                f"{len(missing)} feature(s) not available at serving time: {shares}",
                evidence,
            )
        return GateResult(
            self.name,
            "passed",
            f"all {len(needed)} features declared or sent in the {n} captured requests",
            evidence,
        )
