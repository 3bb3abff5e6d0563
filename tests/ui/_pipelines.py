"""Pipelines for the action and pipeline-page tests: versions registered straight through the
repositories (no training), each with a small manifest in the content store."""

from __future__ import annotations

from typing import Any

import orjson

from kiln.stores import Stores

PIPELINE = "flights-delay"
OTHER = "other-pipe"


def manifest(version_seed: int) -> dict[str, Any]:
    return {
        "models": {
            "EWR": {"metrics": {"mae": 10.0 + version_seed}},
            "JFK": {"metrics": {"mae": 12.0 - version_seed}},
        },
        "routed_to_fallback": {"LGA": {"fallback_metrics": {"mae": 15.0}}},
    }


def register(
    stores: Stores,
    count: int,
    pipeline: str = PIPELINE,
    owner: str = "olga",
    description: str = "arrival delays",
) -> list[int]:
    """``count`` new candidate versions of ``pipeline`` owned by ``owner``."""
    numbers = []
    with stores.metadata.unit_of_work() as uow:
        uow.pipelines.upsert(pipeline, owner, description, "/nowhere/kiln.yaml")
        for _ in range(count):
            run = uow.runs.create(pipeline, "manual", "", "c" * 64, "kiln.yaml", "host", 1)
            seed = len(uow.versions.list(pipeline))
            digest = stores.content.put(orjson.dumps(manifest(seed)))
            metrics = {"primary": "mae", "overall": {"mae": 11.0 + seed}, "segments": 2}
            number = uow.versions.register(pipeline, run.id, digest, metrics, {}).version
            uow.runs.mark_finished(run.id, "succeeded", model_version=number)
            numbers.append(number)
    return numbers


def stage_of(stores: Stores, version: int, pipeline: str = PIPELINE) -> str:
    with stores.metadata.read() as uow:
        return uow.versions.get(pipeline, version).stage
