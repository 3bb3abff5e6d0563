"""An experiment version (``kiln run --experiment``) never takes traffic: every stage change that
would let it serve is refused, and `kiln status` does not call it the latest version."""

from __future__ import annotations

import pytest

from kiln.registry.stages import StageError, Stages
from kiln.registry.status import pipeline_status
from kiln.stores import MetadataStore

PIPELINE = "flights-delay"


def _register(store: MetadataStore, experiment: str | None) -> int:
    with store.unit_of_work() as uow:
        uow.pipelines.upsert(PIPELINE, "data-team", "arrival delays", "kiln.yaml")
        run = uow.runs.create(PIPELINE, "manual", "", "c" * 64, "kiln.yaml", "host", 1)
        lineage = {"experiment": experiment} if experiment else {}
        return uow.versions.register(PIPELINE, run.id, "0" * 64, {}, lineage).version


def test_an_experiment_cannot_serve_in_any_way(store: MetadataStore) -> None:
    stages = Stages(store)
    first = _register(store, None)
    stages.promote(PIPELINE, first, actor="me")
    exp = _register(store, "more-trees")
    with store.unit_of_work() as uow:
        assert uow.versions.get(PIPELINE, exp).experiment == "more-trees"
        assert uow.versions.get(PIPELINE, first).experiment is None
    refusals = [
        lambda: stages.promote(PIPELINE, exp, actor="me"),
        lambda: stages.promote(PIPELINE, exp, actor="kiln", only_from="candidate"),
        lambda: stages.set_canary(PIPELINE, exp, 0.1, actor="me"),
        lambda: stages.set_shadow(PIPELINE, exp, actor="me"),
    ]
    for change in refusals:
        with pytest.raises(StageError, match=r"is an experiment \('more-trees'\)") as e:
            change()
        assert "re-run without --experiment" in str(e.value)
    stages.block(PIPELINE, exp, actor="me", reason="bad idea")  # blocking takes no traffic
    with pytest.raises(StageError, match="even by an override"):
        stages.override(PIPELINE, exp, actor="me", reason="I insist")
    assert stages.production(PIPELINE).version == first  # type: ignore[union-attr]


def test_status_shows_the_latest_released_version_not_an_experiment(
    store: MetadataStore,
) -> None:
    first = _register(store, None)
    _register(store, "idea")
    (row,) = pipeline_status(store)
    assert row["latest"] == {"version": first, "stage": "candidate"}
