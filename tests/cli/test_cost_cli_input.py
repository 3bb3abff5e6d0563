"""`kiln cost` refuses bad input with a clear error naming the option or file and the fix,
never a traceback (real child processes on a real home)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def home(tmp_path: Path, cli: Callable[..., Any]) -> dict[str, str]:
    env = {"KILN_HOME": str(tmp_path / ".kiln")}
    assert cli("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    return env


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["--by", "day"], 2, "'day': use one of segment, version, run"),
        (["--since", "last week"], 2, "neither a duration nor a date"),
        (["--since", "2999-01-01"], 2, "is not in the past"),
        (["--since", "0d"], 2, "longer than 0"),
        (["--since", "1000000d"], 2, "starts too long ago"),
        (["--since", "0001-01-01"], 2, "starts too long ago"),
        (["--since", "99999999999999999999d"], 2, "starts too long ago"),
        (["--pipeline", "nope"], 6, "no pipeline 'nope' (known: none yet)"),
    ],
)
def test_bad_options(
    tmp_path: Path, cli: Callable[..., Any], home: dict[str, str], args: list[str], code: int,
    said: str,
) -> None:  # fmt: skip
    done = cli("cost", *args, cwd=tmp_path, env=home)
    assert done.returncode == code, done.stderr
    assert said in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_a_malformed_price_table_names_its_file_and_line(
    tmp_path: Path, cli: Callable[..., Any], home: dict[str, str]
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: EUR\nvcpu_hour: -1\n")
    done = cli("cost", cwd=tmp_path, env=home | {"KILN_PRICES_FILE": str(prices)})
    assert done.returncode != 0
    assert f"{prices}:2" in done.stderr and "vcpu_hour" in done.stderr
    assert "Traceback" not in done.stderr
