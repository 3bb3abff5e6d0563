"""`kiln validate` looks at the data (unless --no-data), and `kiln run` warns about numbers
stored as text. Data: small CSV and SQLite files made here."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from kiln.config import load_config
from kiln.errors import SchemaError, SourceError
from kiln.runs import Runner
from kiln.runs.probe import probe_data
from kiln.runs.reporting import NullReporter
from kiln.stores import Stores

CONFIG = """\
name: probe-test
owner: ds@example.com
data:
  source: flights.csv
  time_column: ts
target: delay
features: [origin, temp, wind]
segments:
  column: origin
  values: [EWR, jfk, Paris]
  min_rows: 20
model:
  estimator: lightgbm.LGBMRegressor
  params: {n_estimators: 5, num_leaves: 4, min_child_samples: 5}
evaluation: {split: {holdout_fraction: 0.2}}
resources: {cpus: 1}
"""


def write_csv(path: Path, rows: int = 200) -> Path:
    """temp has "NA" cells (read as missing: a number column); wind has '?' and 'n/a ' cells
    (not NA markers: it stays text)."""
    rng = random.Random(0)
    lines = ["ts,origin,temp,wind,delay"]
    for i in range(rows):
        temp = "NA" if i % 9 == 0 else f"{rng.uniform(-5, 30):.1f}"
        wind = "?" if i % 40 == 0 else ("n/a " if i % 45 == 0 else str(rng.randint(0, 20)))
        origin = ("EWR", "JFK", "LGA")[i % 3]
        lines.append(f"2013-01-{1 + i % 28:02d} {i % 24:02d}:00:00,{origin},{temp},{wind},{i % 17}")
    path.write_text("\n".join(lines) + "\n")
    return path


def project(tmp_path: Path, config: str = CONFIG, rows: int = 200) -> Path:
    write_csv(tmp_path / "flights.csv", rows)
    (tmp_path / "kiln.yaml").write_text(config)
    return tmp_path / "kiln.yaml"


def test_probe_warns_about_segment_values_and_numbers_stored_as_text(tmp_path: Path) -> None:
    loaded = load_config(project(tmp_path))
    probe = probe_data(loaded)
    assert probe.sampled_rows == 200 and probe.segment_values == 3
    jfk, paris, wind = probe.warnings
    assert jfk.startswith(f"{loaded.path}:10:17: segments.values: 'jfk' never occurs")
    assert "(did you mean 'JFK'?)" in jfk
    assert paris.startswith(f"{loaded.path}:10:22: segments.values: 'Paris' never occurs")
    assert "did you mean" not in paris
    assert wind.startswith(f"{loaded.path}:7:26: features: feature 'wind' is text but 95%")
    assert "'?' (5)" in wind and "'n/a ' (4)" in wind
    assert "TRY_CAST(wind AS DOUBLE) AS wind" in wind
    assert not any("'temp'" in w for w in probe.warnings)  # its "NA" cells are missing values


def test_probe_on_a_database_quotes_the_column_and_suggests_portable_sql(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "w.db")) as con:
        con.execute('CREATE TABLE t (ts TEXT, "Origin Code" TEXT, temp TEXT, wind TEXT, d REAL)')
        con.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            [(f"2013-01-0{1 + i % 9} 05:00:00", "EWR", "n/a" if i == 3 else str(i), "1", i)
             for i in range(40)],
        )  # fmt: skip
        con.commit()
    config = (
        CONFIG.replace("source: flights.csv", "source: sqlite:///w.db\n  query: SELECT * FROM t;")
        .replace("column: origin", "column: Origin Code")
        .replace("[origin, temp, wind]", "[temp, wind]")
        .replace("target: delay", "target: d")
    )
    (tmp_path / "kiln.yaml").write_text(config)
    probe = probe_data(load_config(tmp_path / "kiln.yaml"))
    assert probe.segment_values == 1 and "database sqlite" in probe.described
    temp = next(w for w in probe.warnings if "'temp'" in w)
    assert "CAST(NULLIF(TRIM(temp), 'n/a') AS DOUBLE PRECISION) AS temp" in temp


def test_probe_errors_name_the_line_at_fault(tmp_path: Path) -> None:
    path = project(tmp_path)
    path.write_text(CONFIG.replace("flights.csv", "flihgts.csv"))
    with pytest.raises(SourceError) as info:
        probe_data(load_config(path))
    assert str(info.value).startswith(f"{path}:4:11: data.source: {tmp_path / 'flihgts.csv'}")
    assert "does not exist" in str(info.value)

    path.write_text(CONFIG.replace("  time_column", "  query: SELECT * FROM dta\n  time_column"))
    with pytest.raises(SourceError) as info:
        probe_data(load_config(path))
    assert str(info.value).startswith(f"{path}:5:10: data.query: the query failed")
    assert "query: SELECT * FROM dta" in str(info.value)  # the user's query, not the probe's

    path.write_text(CONFIG.replace("[origin, temp, wind]", "[origin, tmp, wind]"))
    with pytest.raises(SchemaError, match="column 'tmp' is not in the data"):
        probe_data(load_config(path))


def test_cli_validate_probes_the_data_unless_no_data(cli, tmp_path: Path) -> None:
    path = project(tmp_path)
    ok = cli("validate", str(path), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "data: csv file(s)" in ok.stdout and "3 distinct origin values" in ok.stdout
    assert "3 warning(s)" in ok.stdout and "'jfk' never occurs" in ok.stderr
    # offline: the file need not exist (without --no-data: exit 3, see the init scaffold test)
    path.write_text(CONFIG.replace("flights.csv", "missing.csv"))
    offline = cli("validate", "--no-data", str(path), cwd=tmp_path)
    assert offline.returncode == 0 and "data:" not in offline.stdout


class Collect(NullReporter):
    """A Reporter that keeps the warnings (the CLI draws the same calls with Rich)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)


def test_run_warns_about_numbers_stored_as_text_and_reads_na_as_missing(
    tmp_path: Path, runner: Runner, stores: Stores
) -> None:
    loaded = load_config(project(tmp_path, CONFIG.replace("[EWR, jfk, Paris]", "auto")))
    reporter = Collect()
    result = Runner(runner.settings, stores, reporter).run(loaded)
    [wind] = [w for w in reporter.warnings if "'wind'" in w]
    assert wind.startswith(f"{loaded.path}:7:26: features: feature 'wind' is text")
    kinds = {f["name"]: f["kind"] for f in result.manifest["features"]}
    assert kinds == {"origin": "categorical", "temp": "numeric", "wind": "categorical"}
    with stores.metadata.unit_of_work() as uow:
        check = next(s for s in uow.steps.for_run(result.run_id) if s.name == "check")
    assert check.details["numbers_as_text"] == [wind]
