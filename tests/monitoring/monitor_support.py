"""A real flights version in production and real later flights served to it, captured as the
server captures them (event time = the flight's scheduled hour): what monitor tests run on."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from kiln.config import LoadedConfig
from kiln.registry.stages import Stages
from kiln.registry.version import Version
from kiln.release.controller import Release
from kiln.runs import Runner
from kiln.settings import Settings
from kiln.stores import CaptureRecord, CaptureWriter, Stores

P = "flights-test"


def production(settings: Settings, stores: Stores, loaded: LoadedConfig) -> Version:
    """Train ``loaded`` for real, gate it and promote it (as `kiln promote` does)."""
    number = Runner(settings, stores).run(loaded).version
    assert number is not None
    Release(settings, stores).after_run(loaded.config.name, number)
    Stages(stores.metadata).promote(loaded.config.name, number, actor="tests", reason="test")
    with stores.metadata.read() as uow:
        return Version(stores, uow.versions.get(loaded.config.name, number))


def flights(warehouse: Path, first: date, last: date) -> list[dict[str, Any]]:
    """The real flights scheduled from ``first`` to ``last`` (inclusive), every column."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        frame = con.execute(
            "SELECT * FROM flights WHERE CAST(time_hour AS DATE) BETWEEN ? AND ?"
            " ORDER BY flight_id",
            [first, last],
        ).df()
    return frame.astype(object).where(frame.notna(), None).to_dict("records")  # type: ignore[no-any-return]


def serve(
    settings: Settings,
    version: Version,
    rows: list[dict[str, Any]],
    *,
    failing: set[int] | None = None,
    writer_id: str = "t",
    shift: timedelta = timedelta(0),
) -> list[float | None]:
    """Capture ``rows`` as answered by ``version`` (its real predictions), event time = the
    flight's hour (naive local time in the warehouse, taken as UTC here), served now; the
    rows in ``failing`` as 500s with no answer; ``shift`` moves the event times (to recent
    days, for the loops that monitor up to now)."""
    failing = failing or set()
    features = version.features
    inputs = [{k: r[k] for k in features} for r in rows]
    answer = version.predictor.predict(inputs)
    now = datetime.now(UTC)
    with CaptureWriter(settings.artifact_root, writer_id=writer_id) as writer:
        for i, (row, given) in enumerate(zip(rows, inputs, strict=True)):
            bad = i in failing
            assert writer.offer(
                CaptureRecord(
                    request_id=str(row["flight_id"]),
                    ts=now,
                    event_ts=row["time_hour"].to_pydatetime().replace(tzinfo=UTC) + shift,
                    pipeline=version.pipeline,
                    version=version.number,
                    stage="production",
                    segment=row["origin"],
                    model="-" if bad else answer.model[i],
                    fallback=False if bad else bool(answer.fallback[i]),
                    features=given,
                    prediction=None if bad else float(answer.values[i]),
                    error="500 internal_error: the prediction failed" if bad else None,
                    latency_ms=1.0 + (i % 50),
                    status=500 if bad else 200,
                )
            )
    return [None if i in failing else float(v) for i, v in enumerate(answer.values)]
