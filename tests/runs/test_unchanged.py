"""Retraining on unchanged data, config and code: nothing is registered (``deploy.on_unchanged:
skip``, the default; ``kiln run --force`` overrides), or a candidate that is never gated nor
promoted (``register``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kiln.config import LoadedConfig, load_config
from kiln.runs import Runner
from kiln.runs.options import RunOptions
from kiln.runs.unchanged import RunIdentity, code_digest, unchanged_from
from kiln.stores import Stores


def write(tmp_path: Path, n: int = 400, **extra: Any) -> LoadedConfig:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=n), "g": rng.choice(["a", "b"], n)})
    df["y"] = 2 * df.x + rng.normal(0, 0.1, n)
    df.to_parquet(tmp_path / "rows.parquet")
    cfg = {
        "name": "same",
        "owner": "tests@example.com",
        "data": {"source": str(tmp_path / "rows.parquet")},
        "target": "y",
        "features": ["x"],
        "segments": {"column": "g", "min_rows": 20},
        "model": {"estimator": "sklearn.linear_model.LinearRegression"},
        "resources": {"cpus": 1},
        **extra,
    }
    (tmp_path / "kiln.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_config(tmp_path / "kiln.yaml")


IDENTITY = RunIdentity("d" * 64, "c" * 64, "abc123", "e" * 64)
LINEAGE = {"data_digest": "d" * 64, "config_digest": "c" * 64, "code_revision": "abc123",
           "code_digest": "e" * 64}  # fmt: skip


def test_identical_only_when_data_config_and_code_all_match() -> None:
    assert unchanged_from(IDENTITY, LINEAGE)
    for field in LINEAGE:
        assert not unchanged_from(IDENTITY, LINEAGE | {field: "other"})
    assert not unchanged_from(IDENTITY, {k: v for k, v in LINEAGE.items() if k != "code_digest"})
    outside_git = RunIdentity("d" * 64, "c" * 64, None, "e" * 64)
    assert unchanged_from(outside_git, LINEAGE | {"code_revision": None})
    dirty = RunIdentity("d" * 64, "c" * 64, "abc123+dirty", "e" * 64)
    assert not unchanged_from(dirty, LINEAGE | {"code_revision": "abc123+dirty"})


def test_code_digest_follows_the_train_module(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("def train(X, y, context):\n    return None\n")
    loaded = write(tmp_path, model={"train": "train:train"})
    before = code_digest(loaded)
    assert code_digest(loaded) == before
    (tmp_path / "train.py").write_text("def train(X, y, context):\n    return 1\n")
    assert code_digest(loaded) != before


def promote(stores: Stores, version: int) -> None:
    with stores.metadata.unit_of_work() as uow:
        uow.versions.set_stage("same", version, "production")


def test_unchanged_run_registers_nothing(tmp_path: Path, runner: Runner, stores: Stores) -> None:
    loaded = write(tmp_path)
    first = runner.run(loaded)
    assert first.version == 1 and first.unchanged_from is None
    assert first.manifest["lineage"]["code_digest"] == code_digest(loaded)
    again = runner.run(loaded)  # v1 is only a candidate: nothing to compare with
    assert again.version == 2
    promote(stores, 2)

    skipped = runner.run(loaded)

    assert (skipped.version, skipped.manifest_digest, skipped.unchanged_from) == (None, None, 2)
    with stores.metadata.unit_of_work() as uow:
        run = uow.runs.get(skipped.run_id)
        steps = {s.name: s for s in uow.steps.for_run(skipped.run_id)}
        tasks = uow.tasks.for_run(skipped.run_id)
        versions = uow.versions.list(pipeline="same")
    assert run.status == "succeeded" and run.model_version is None and run.error is None
    assert steps["train"].status == "skipped" and steps["train"].details["unchanged_from"] == 2
    assert tasks == []  # not trained at all
    assert [v.version for v in versions] == [1, 2]

    write(tmp_path, n=401)  # one more row: new data, so a new version (and the lock was freed)
    changed = runner.run(load_config(tmp_path / "kiln.yaml"))
    assert changed.version == 3 and changed.unchanged_from is None


def test_on_unchanged_register_keeps_a_candidate_with_a_note(
    tmp_path: Path, runner: Runner, stores: Stores
) -> None:
    loaded = write(tmp_path, deploy={"on_unchanged": "register"})
    assert runner.run(loaded).version == 1
    promote(stores, 1)

    same = runner.run(loaded)

    assert same.version == 2 and same.unchanged_from == 1
    assert same.manifest["lineage"]["unchanged_from"] == 1
    with stores.metadata.unit_of_work() as uow:
        v2 = uow.versions.get("same", 2)
        events = [e for e in uow.audit.list(pipeline="same") if e.action == "register"]
    assert v2.stage == "candidate" and v2.lineage["unchanged_from"] == 1
    assert any((e.details or {}).get("unchanged_from") == 1 for e in events)


def test_cli_says_nothing_was_registered_and_force_trains(cli, tmp_path: Path) -> None:
    loaded = write(tmp_path, deploy={"auto_promote": True})
    home = str(tmp_path / ".kiln")
    first = cli("--home", home, "run", str(loaded.path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "registered same v1" in first.stdout and "promoted" in first.stdout
    # no time column and no split named: the run says which holdout it took
    assert "no data.time_column: the holdout is random split: 20% of the rows, seed 0" in (
        " ".join(first.stderr.split())
    )

    second = cli("--home", home, "run", str(loaded.path), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert (
        "data, config and code are identical to production v1: nothing registered" in second.stdout
    )
    assert "registered same" not in second.stdout

    forced = cli("--home", home, "run", "--force", str(loaded.path), cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "registered same v2" in forced.stdout


def test_steps_run_after_a_promoted_run_never_skip_as_unchanged(
    tmp_path: Path, runner: Runner, stores: Stores
) -> None:
    loaded = write(tmp_path)
    promote(stores, runner.run(loaded).version)

    trained = runner.run_steps(loaded, "train")  # the same data, config and code: it trains

    assert trained.stopped_after == "train"
    with stores.metadata.unit_of_work() as uow:
        steps = {s.name: s.status for s in uow.steps.for_run(trained.run_id)}
        tasks = {t.segment for t in uow.tasks.for_run(trained.run_id)}
        assert uow.runs.get(trained.run_id).status == "succeeded"
        assert uow.locks.get("same") is None
    assert steps["train"] == "succeeded" and steps["package"] == "skipped"
    assert {"a", "b"} <= tasks


def test_force_is_recorded_for_resume(tmp_path: Path, runner: Runner, stores: Stores) -> None:
    loaded = write(tmp_path)
    promote(stores, runner.run(loaded).version)

    forced = runner.run(loaded, force=True)

    assert forced.version == 2 and forced.unchanged_from is None
    with stores.metadata.unit_of_work() as uow:
        extract = next(s for s in uow.steps.for_run(forced.run_id) if s.name == "extract")
    assert RunOptions.from_details(extract.details["options"]).force  # what resume reads
