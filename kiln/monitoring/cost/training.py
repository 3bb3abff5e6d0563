"""Training cost, the reads: every run with activity in a period and the gates evaluated
outside a run, read in one unit of work with a bounded number of queries whatever the number
of runs, and charged by :mod:`kiln.monitoring.cost.training_charge`."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from kiln.monitoring.cost.model import CostItem
from kiln.monitoring.cost.training_charge import (
    RunCost,
    cost_of_run,
    gate_item,
    requested_resources,
)
from kiln.settings import Prices
from kiln.stores.metadata import MetadataStore

__all__ = ["RunCost", "requested_resources", "run_cost", "training_items"]


def training_items(
    metadata: MetadataStore,
    prices: Prices,
    *,
    since: datetime,
    until: datetime,
    pipeline: str | None = None,
    pipelines: Collection[str] | None = None,
) -> list[CostItem]:
    """Every run with activity in [since, until) (finished, failed, interrupted or still
    running) as items dated at its end, and the gates evaluated outside a run; of
    ``pipeline``, or of ``pipelines`` (a page of the catalogue), when given. Four queries
    (one per 500 runs or pipelines): the runs, their steps, their tasks, the gates."""
    wanted = pipelines
    if pipeline is not None:
        wanted = [pipeline] if pipelines is None or pipeline in pipelines else []
    if wanted is not None and not wanted:
        return []
    with metadata.read() as uow:
        runs = uow.runs.in_period(since, until, wanted)
        ids = [r.id for r in runs]
        steps, tasks = uow.steps.for_runs(ids), uow.tasks.for_runs(ids)
        gates = uow.gates.outside_runs(since, until, wanted)
    items: list[CostItem] = []
    for run in runs:
        cost = cost_of_run(prices, run, steps.get(run.id, []), tasks.get(run.id, []))
        if cost.at is not None and since <= cost.at < until:
            items += cost.items
    return items + [gate_item(prices, g) for g in gates]


def run_cost(metadata: MetadataStore, prices: Prices, run_id: str) -> RunCost:
    """The cost of one run (:class:`RunCost`); an unknown run is a NotFoundError."""
    with metadata.read() as uow:
        run = uow.runs.get(run_id)
        steps, tasks = uow.steps.for_run(run_id), uow.tasks.for_run(run_id)
    return cost_of_run(prices, run, steps, tasks)
