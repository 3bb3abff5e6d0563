"""The holdout split: which rows evaluate a model and are never trained on. Pure; no I/O.

A split is decided once per run (:func:`resolve_split`) and written into the version's lineage
as a :class:`Split` record; :func:`holdout_mask` recomputes the mask from the rows and that
record alone, so training and the gates that later score a version on "its" holdout always
agree on the rows.

- ``time``: rows at or after ``holdout_start`` (with ``holdout_fraction`` the cutoff is the
  time quantile, so no holdout row is older than a training row).
- ``random``: a row is held out iff a seeded 64-bit hash of its content (its features and
  segment column, pandas' ``hash_pandas_object`` mixed with the seed) falls in the first
  ``fraction`` of the buckets: about ``fraction`` of the rows, chosen at random by the seed, and
  a row keeps its side when rows are appended or reordered (a permutation of the rows would
  reshuffle them, so a retrain's champion would be scored on rows it trained on); identical rows
  are never split.
- ``hash``: a row is held out iff ``blake2b(str(key)) mod 10,000 < fraction * 10,000``: a key
  stays on its side across retrains and appended rows, and rows of one key are never split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from kiln.config.models import PipelineConfig, SplitKind
from kiln.pipeline.plan import time_cutoff

__all__ = [
    "HASH_BUCKETS",
    "Split",
    "hash_buckets",
    "holdout_mask",
    "random_buckets",
    "resolve_split",
]

HASH_BUCKETS = 10_000
_HASH = "blake2b-64"


@dataclass(frozen=True)
class Split:
    """Everything needed to recompute a run's holdout from its rows (lineage ``split``)."""

    kind: SplitKind
    fraction: float | None = None
    time_column: str | None = None
    holdout_start: pd.Timestamp | None = None
    seed: int | None = None
    key: str | None = None
    columns: tuple[str, ...] = ()
    """The columns whose content a random split hashes (the features and segment column)."""
    defaulted: bool = False
    """The config named no split: the kind was chosen from the presence of a time column."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "time":
            out |= {
                "time_column": self.time_column,
                "holdout_start": self.holdout_start.isoformat() if self.holdout_start else None,
                "rule": "time >= holdout_start",
            }
        elif self.kind == "random":
            out |= {
                "fraction": self.fraction,
                "seed": self.seed,
                "columns": list(self.columns),
                "hash": "pandas hash_pandas_object(columns) + splitmix64(seed)",
                "buckets": HASH_BUCKETS,
                "rule": "mix(row hash, seed) mod buckets < fraction * buckets",
            }
        else:
            out |= {
                "fraction": self.fraction,
                "key": self.key,
                "hash": _HASH,
                "buckets": HASH_BUCKETS,
                "rule": "blake2b-64(str(key)) mod buckets < fraction * buckets",
            }
        return out

    @classmethod
    def from_lineage(cls, lineage: dict[str, Any]) -> Split:
        """The split a version recorded; versions from before ``split`` was recorded were all
        time splits, recorded as ``time_column`` and ``holdout_start``."""
        rec = lineage.get("split") or {
            "kind": "time",
            "time_column": lineage.get("time_column"),
            "holdout_start": lineage.get("holdout_start"),
        }
        start = rec.get("holdout_start")
        return cls(
            kind=rec["kind"],
            fraction=rec.get("fraction"),
            time_column=rec.get("time_column"),
            holdout_start=pd.Timestamp(start) if start else None,
            seed=rec.get("seed"),
            key=rec.get("key"),
            columns=tuple(rec.get("columns") or ()),
        )

    def describe(self) -> str:
        if self.kind == "time":
            start = self.holdout_start.isoformat() if self.holdout_start else "?"
            return f"time split: {self.time_column} >= {start}"
        if self.kind == "random":
            return f"random split: {self.fraction:.0%} of the rows, seed {self.seed}"
        return f"hash split: {self.fraction:.0%} of the values of {self.key}"


def resolve_split(rows: pd.DataFrame, config: PipelineConfig) -> Split:
    """Decide the run's split from the config and (for a time quantile) the rows."""
    split = config.evaluation.split
    kind = config.split_kind
    defaulted = (
        split.kind is None and split.holdout_start is None and config.data.time_column is None
    )
    if kind == "time":
        column = str(config.data.time_column)
        return Split(
            kind="time",
            time_column=column,
            holdout_start=time_cutoff(rows[column], split),
            fraction=split.holdout_fraction,
        )
    if kind == "random":
        seed = 0 if split.seed is None else split.seed
        segment = [config.segments.column] if config.segments else []
        columns = tuple(dict.fromkeys([*config.features, *segment]))
        return Split(
            kind="random", fraction=split.fraction, seed=seed, columns=columns, defaulted=defaulted
        )
    return Split(kind="hash", fraction=split.fraction, key=split.key)


def holdout_mask(rows: pd.DataFrame, split: Split) -> np.ndarray:
    """True for the rows of ``rows`` (in their order) that ``split`` holds out."""
    if split.kind == "time":
        if split.holdout_start is None or split.time_column is None:
            raise ValueError("a time split needs time_column and holdout_start")
        times = pd.to_datetime(rows[split.time_column])
        start = split.holdout_start
        tz = getattr(times.dt, "tz", None)
        if tz is not None and start.tzinfo is None:
            start = start.tz_localize(tz)
        elif tz is None and start.tzinfo is not None:
            start = start.tz_convert(None)
        return (times >= start).to_numpy()
    fraction = float(split.fraction if split.fraction is not None else 0.2)
    if split.kind == "random":
        if not split.columns:
            raise ValueError("a random split needs the columns it hashes")
        return random_buckets(rows[list(split.columns)], split.seed or 0) < round(
            fraction * HASH_BUCKETS
        )
    if split.key is None:
        raise ValueError("a hash split needs its key column")
    return hash_buckets(rows[split.key]) < round(fraction * HASH_BUCKETS)


def random_buckets(rows: pd.DataFrame, seed: int) -> np.ndarray:
    """Each row's bucket in [0, HASH_BUCKETS): pandas' 64-bit hash of the row's values, mixed
    with ``seed`` by the splitmix64 finalizer (so each seed draws another random subset)."""
    z = pd.util.hash_pandas_object(rows, index=False).to_numpy(dtype=np.uint64)
    z = z + np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(HASH_BUCKETS)).astype(np.int64)


def hash_buckets(keys: pd.Series) -> np.ndarray:
    """Each value's bucket in [0, HASH_BUCKETS): blake2b of its text form (whole floats as
    integers, so 42 and 42.0 agree; nulls as the empty string). Each distinct value is hashed
    once."""
    codes, uniques = pd.factorize(keys, use_na_sentinel=True)
    buckets = np.array([_bucket(_text(v)) for v in uniques], dtype=np.int64)
    out = np.full(len(keys), _bucket(""), dtype=np.int64)
    known = codes >= 0
    out[known] = buckets[codes[known]]
    return out


def _text(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).isoformat()
    return str(value)


def _bucket(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % HASH_BUCKETS
