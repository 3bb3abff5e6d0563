"""The ``cost:`` section of kiln.yaml: the pipeline's monthly budget."""

from __future__ import annotations

from pydantic import Field

from kiln.config.base import Strict

__all__ = ["CostConfig"]


class CostConfig(Strict):
    budget_per_month: float | None = Field(
        default=None,
        gt=0,
        description="Monthly budget of the pipeline (training + serving + storage) in the"
        " price table's currency; when the month's forecast passes it, an alert goes to the"
        " monitor's channels, once per episode. Unset: no budget.",
    )
