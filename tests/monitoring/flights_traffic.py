"""Real flights as captured traffic: a version trained on January-February, and later rows of
the warehouse answered by its real predictor and written with Kiln's CaptureWriter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import yaml

from kiln.config import load_config
from kiln.registry import Predictor
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import CaptureWriter, open_stores
from kiln.stores.capture import CaptureRecord
from tests.conftest import BASE, merge

PIPELINE = "flights-test"


@dataclass(frozen=True)
class Trained:
    manifest: dict[str, Any]
    predictor: Predictor
    version: int

    @property
    def features(self) -> list[str]:
        return [f["name"] for f in self.manifest["features"]]

    @property
    def types(self) -> pa.StructType:
        """How the server stores a validated request's features typed."""
        kinds = {"numeric": pa.float64(), "categorical": pa.string()}
        return pa.struct([(f["name"], kinds[f["kind"]]) for f in self.manifest["features"]])


def train(home: Path, warehouse: Path, **changes: Any) -> list[Trained]:
    """Run the test pipeline (BASE: January-February, a model per origin) once per change set
    in the same home; each run registers the next version."""
    settings = Settings(home=home / ".kiln")
    stores = open_stores(settings, upgrade=True)
    out = []
    try:
        for i, change in enumerate(changes.values()):
            path = home / f"kiln-{i}.yaml"
            data = merge(merge(BASE, {"data": {"source": str(warehouse)}}), change)
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            result = Runner(settings, stores).run(load_config(path))
            assert result.manifest_digest is not None and result.version is not None
            manifest = orjson.loads(stores.content.get(result.manifest_digest, what="manifest"))
            predictor = Predictor.load(stores.content, result.manifest_digest, label="test")
            out.append(Trained(manifest, predictor, result.version))
    finally:
        stores.close()
    return out


def flights(warehouse: Path, where: str, *, every: int = 5) -> list[dict[str, Any]]:
    """Every ``every``-th flight matching ``where``, with its scheduled hour (``time_hour``)."""
    cols = ", ".join(BASE["features"])
    with duckdb.connect(str(warehouse), read_only=True) as con:
        table = con.sql(
            f"SELECT time_hour, {cols} FROM flights WHERE ({where}) AND flight_id % {every} = 0"
            " ORDER BY flight_id"
        ).to_arrow_table()
    return table.to_pylist()


def capture(
    root: str,
    trained: Trained,
    rows: list[dict[str, Any]],
    *,
    stage: str = "production",
    typed: bool = True,
    drop: tuple[str, ...] = (),
) -> None:
    """Answer ``rows`` with the version's predictor and capture them as the server does, each at
    its flight's hour (event time); ``drop`` leaves features out of the requests."""
    features = [
        {k: (float(v) if isinstance(v, int) else v) for k, v in r.items()
         if k in trained.features and k not in drop}
        for r in rows
    ]  # fmt: skip
    pred = trained.predictor.predict(features)
    with CaptureWriter(root, writer_id=f"test-{trained.version}-{stage}") as writer:
        for i, (row, feats) in enumerate(zip(rows, features, strict=True)):
            event = row["time_hour"].replace(tzinfo=UTC)
            record = CaptureRecord(
                request_id=f"v{trained.version}-{stage}-{i}", ts=event + timedelta(minutes=1),
                event_ts=event, pipeline=PIPELINE, version=trained.version, stage=stage,
                segment=row["origin"], model=pred.model[i], fallback=bool(pred.fallback[i]),
                features=feats, prediction=float(pred.values[i]), error=None, latency_ms=1.0,
                unseen=pred.unseen_of(i), status=200,
                feature_types=trained.types if typed and not drop else None,
            )  # fmt: skip
            assert writer.offer(record)
