"""What cost is made of: one charged amount (:class:`CostItem`), and the OpenCost charge.

Every source of cost (training tasks and steps, gates run outside a run, serving intervals,
stored bytes) becomes CostItems; reports, budgets and `kiln cost` only add CostItems up, so
the figures add up by construction: segments to their run, runs to their pipeline.
An amount that cannot be known (a measurement is missing) is ``None``, never 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kiln.settings import Prices

__all__ = [
    "GIB",
    "MONTH_SECONDS",
    "CostItem",
    "CostKind",
    "amount_text",
    "charge",
    "compute_usd",
    "storage_usd",
]

CostKind = Literal["training", "serving", "storage"]
GIB = 2**30
_HOUR = 3600.0
MONTH_SECONDS = 30.436875 * 86400  # a mean Gregorian month, as cloud bills prorate
_GB = 10**9


@dataclass(frozen=True, slots=True)
class CostItem:
    """One charged amount of one pipeline.

    ``detail`` says what was charged: ``task`` (a segment's own training), ``shared`` (its
    share of the run's idle workers, worker base memory and non-train steps), ``retry`` (earlier
    attempts), ``gate:<name>`` (a gate evaluated outside a run), ``requests`` / ``idle``
    (serving), ``packages`` / ``snapshots`` / ``captures`` / ``labels`` (storage).
    """

    pipeline: str
    kind: CostKind
    detail: str
    at: datetime
    """When it was spent: a task's or step's end, a serving interval's end, a measurement."""
    usd: float | None
    """In the price table's currency (named USD for short); None: unknown."""
    cpu_usd: float | None = None
    memory_usd: float | None = None
    storage_usd: float | None = None
    run_id: str | None = None
    version: int | None = None
    segment: str | None = None
    """The segment it is charged to (None: the pipeline's, e.g. storage or a gate)."""
    cpu_seconds: float | None = None
    """Charged vCPU-seconds (max of reserved and used)."""
    memory_gib_seconds: float | None = None
    predictions: int = 0
    """Rows predicted (serving), for $ per 1,000 predictions."""
    month_rate_usd: float | None = None
    """Storage: what keeping this span's bytes costs per month (the report's $/month of
    storage is the newest span's rate, not the period's average)."""


def charge(
    *,
    wall_seconds: float,
    cpu_seconds: float,
    memory_bytes: float,
    requested_cpus: float | None,
    requested_memory_bytes: float | None,
) -> tuple[float, float]:
    """(charged vCPU-seconds, charged GiB-seconds) as OpenCost charges a container: the max of
    what was requested and what was used, for as long as it ran."""
    cpu = max((requested_cpus or 0.0) * wall_seconds, cpu_seconds)
    memory = max(requested_memory_bytes or 0.0, memory_bytes) / GIB * wall_seconds
    return cpu, memory


def compute_usd(
    prices: Prices, cpu_seconds: float, memory_gib_seconds: float, *, training: bool
) -> tuple[float, float]:
    """(cpu $, memory $) of charged vCPU-seconds and GiB-seconds; training takes the spot
    discount off."""
    factor = 1.0 - prices.training_spot_discount if training else 1.0
    cpu = cpu_seconds / _HOUR * prices.vcpu_hour * factor
    memory = memory_gib_seconds / _HOUR * prices.memory_gib_hour * factor
    return cpu, memory


def storage_usd(prices: Prices, nbytes: float, seconds: float) -> float:
    """$ of keeping ``nbytes`` for ``seconds`` (prorated from $/GB-month)."""
    return nbytes / _GB * prices.storage_gb_month * seconds / MONTH_SECONDS


def amount_text(value: float) -> str:
    """An amount with the digits that matter: cents from 1 up, else two significant digits
    (a run costs fractions of a cent, minutes of storage millionths): 12.50, 0.0012, 0.000000031.
    """
    if value == 0 or abs(value) >= 1:
        return f"{value:,.2f}"
    digits = max(2, 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"
