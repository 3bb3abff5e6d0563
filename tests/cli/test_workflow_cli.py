"""The commands of one idea: `kiln run --experiment` prints the champion/challenger table and
deploys nothing, `kiln compare` shows two versions side by side, `kiln promote` refuses the
experiment, `kiln run --step` stops where asked; conflicting flags are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import BASE, merge

pytestmark = pytest.mark.slow


def _write(tmp_path: Path, warehouse: Path, name: str, trees: int) -> str:
    data = merge(BASE, {"data": {"source": str(warehouse),
                                 "query": "SELECT * FROM flights WHERE month = 2"},
                        "model": {"params": {"n_estimators": trees, "num_leaves": 7}}})  # fmt: skip
    (tmp_path / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return name


def test_experiment_compare_and_step_from_the_command_line(
    cli, tmp_path: Path, warehouse: Path
) -> None:
    env = {"KILN_ADMIN_TOKEN": "s3cret", "KILN_TOKEN": "s3cret"}
    home = ["--home", str(tmp_path / ".kiln")]
    prod = _write(tmp_path, warehouse, "kiln.yaml", 10)
    idea = _write(tmp_path, warehouse, "idea.yaml", 6)
    r = cli(*home, "run", prod, "--skip-gates", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert cli(*home, "promote", "flights-test", "1", cwd=tmp_path, env=env).returncode == 0
    r = cli(*home, "run", idea, "--experiment", "fewer-trees", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "registered experiment fewer-trees flights-test v2" in r.stdout
    assert "experiment v2 vs production v1" in r.stdout and "challenger" in r.stdout
    assert "not deployed" in r.stdout and "gates of" not in r.stdout
    p = cli(*home, "promote", "flights-test", "2", cwd=tmp_path, env=env)
    assert p.returncode == 2 and "is an experiment ('fewer-trees')" in p.stderr
    c = cli(*home, "compare", "flights-test", "production", "v2", cwd=tmp_path, env=env)
    assert c.returncode == 0, c.stderr
    assert "fewer-trees" in c.stdout and "mae v1" in c.stdout and "mae v2" in c.stdout
    assert "-    n_estimators: 10" in c.stdout and "+    n_estimators: 6" in c.stdout
    r = cli(*home, "run", idea, "--experiment", "quick", "--skip-gates", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr  # no gates, but an experiment is still compared
    assert "experiment v3 vs production v1" in r.stdout and "not deployed" in r.stdout
    m = cli(*home, "models", "list", cwd=tmp_path, env=env)
    assert "(experiment fewer-trees)" in m.stdout
    s = cli(*home, "run", prod, "--step", "check", cwd=tmp_path, env=env)
    assert s.returncode == 0, s.stderr
    assert "stopped after check" in s.stdout and "reusing the data snapshot of run" in s.stdout
    assert "skipped" in s.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume", "abc", "--experiment", "x"], "it takes no other run option"),
        (["kiln.yaml", "--step", "train", "--segment", "EWR"], "goes without --experiment"),
        (["kiln.yaml", "--from-run", "abc"], "--from-run names the data snapshot"),
        (["kiln.yaml", "--experiment", "no spaces"], "not a valid experiment name"),
    ],
)
def test_conflicting_run_flags_are_refused(cli, tmp_path: Path, args, message) -> None:
    (tmp_path / "kiln.yaml").write_text(yaml.safe_dump(BASE))
    r = cli("--home", str(tmp_path / ".kiln"), "run", *args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr
