"""One handle for a loaded model version: what gates, serving, `kiln predict` and the monitor
read of a registered version.

``Version(stores, record)`` costs nothing until something is asked: the package is loaded
(environment lock and every digest checked, :func:`kiln.registry.package.load_package`) on first
use of :attr:`Version.predictor`, the kiln.yaml it was trained from is parsed on first use of
:attr:`Version.loaded`, and its data snapshot is read on first use of :attr:`Version.rows`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from kiln.config.deploy import DeployConfig
from kiln.config.loader import LoadedConfig, parse_config
from kiln.errors import NotFoundError
from kiln.pipeline.split import Split, holdout_mask
from kiln.registry.predictor import Predictor
from kiln.stores.bundle import Stores
from kiln.stores.metadata.records import RunRecord, VersionRecord
from kiln.stores.snapshots import load_snapshot

__all__ = ["Version"]


class Version:
    """One registered version: its record, manifest, config, model and data.

    ``package_label`` names the package in the errors of loading it (default
    "version N of 'pipeline'").
    """

    def __init__(
        self, stores: Stores, record: VersionRecord, *, package_label: str | None = None
    ) -> None:
        self.stores = stores
        self.record = record
        self._package_label = package_label

    def __repr__(self) -> str:
        return f"Version({self.record.pipeline!r}, {self.record.version})"

    @property
    def pipeline(self) -> str:
        return self.record.pipeline

    @property
    def number(self) -> int:
        return self.record.version

    @property
    def label(self) -> str:
        return f"v{self.record.version}"

    @cached_property
    def predictor(self) -> Predictor:
        return Predictor.load(
            self.stores.content,
            self.record.manifest_digest,
            label=self._package_label or f"version {self.number} of {self.pipeline!r}",
        )

    @property
    def manifest(self) -> dict[str, Any]:
        return self.predictor.manifest

    @cached_property
    def run(self) -> RunRecord:
        """The run that trained this version."""
        with self.stores.metadata.read() as uow:
            return uow.runs.get(self.record.run_id)

    @cached_property
    def loaded(self) -> LoadedConfig:
        """The kiln.yaml of the run that trained this version, as it was then."""
        run = self.run
        return parse_config(run.config_text, Path(run.config_path or "kiln.yaml"))

    @property
    def policy(self) -> DeployConfig:
        return self.loaded.config.deploy

    @property
    def features(self) -> list[str]:
        return list(self.predictor.schema.names)

    @cached_property
    def holdout(self) -> pd.DataFrame:
        """The holdout rows of this version's run (from its data snapshot): every extracted
        column, the rows (with a target) that its run held out."""
        used = self.rows
        hold = holdout_mask(used, Split.from_lineage(self.record.lineage))
        return used.loc[hold].reset_index(drop=True)

    @cached_property
    def rows(self) -> pd.DataFrame:
        """Every row of this version's data snapshot that has a target, every extracted column
        (the rows its run trained and evaluated on)."""
        digest = self.record.lineage.get("data_digest")
        if not digest:
            raise NotFoundError(
                f"version {self.number} of {self.pipeline!r} records no data snapshot",
                hint="its lineage has no data_digest; retrain it with `kiln run`",
            )
        table = load_snapshot(self.stores.content, digest, label=f"{self.label} of {self.pipeline}")
        df = table.to_pandas()
        # Every extracted column, not only this version's features: a champion with other
        # features is scored on the same rows. The rows are those its run trained with (target
        # not null), split exactly as its lineage records.
        return df.loc[df[self.loaded.config.target.column].notna()].reset_index(drop=True)
