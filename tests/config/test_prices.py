"""The price table: documented defaults, a prices file with file:line errors, and the
environment, which wins; a bad setting is a clear error, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.config.prices import prices_path, resolve_prices
from kiln.errors import ConfigError
from kiln.settings import Prices, load_settings
from tests.conftest import kiln_cli


def test_defaults_are_the_documented_on_demand_prices(tmp_path: Path) -> None:
    prices = resolve_prices(load_settings(home=tmp_path))
    assert prices == Prices()
    assert (prices.vcpu_hour, prices.memory_gib_hour, prices.storage_gb_month) == (
        0.031611,
        0.004237,
        0.023,
    )
    assert prices.training_spot_discount == 0.0


def test_home_prices_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "prices.yaml").write_text("vcpu_hour: 0.05\nstorage_gb_month: 0.02\n")
    settings = load_settings(home=tmp_path)
    assert prices_path(settings) == tmp_path / "prices.yaml"
    assert resolve_prices(settings).vcpu_hour == 0.05
    monkeypatch.setenv("KILN_PRICES__VCPU_HOUR", "0.07")
    monkeypatch.setenv("KILN_PRICES__TRAINING_SPOT_DISCOUNT", "0.6")
    prices = resolve_prices(load_settings(home=tmp_path))
    assert (prices.vcpu_hour, prices.storage_gb_month, prices.training_spot_discount) == (
        0.07,
        0.02,
        0.6,
    )


def test_a_malformed_prices_file_names_file_line_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("vcpu_hour: 0.05\nmemory_gib_hour: -1\nstorage_gb_mnth: 2\n")
    with pytest.raises(ConfigError) as e:
        resolve_prices(load_settings(home=tmp_path, prices_file=path))
    assert f"{path}:2:18: memory_gib_hour: Input should be greater than or equal to 0" in str(
        e.value
    )
    assert "did you mean 'storage_gb_month'?" in str(e.value)
    path.write_text("vcpu_hour: [0.05\n")
    with pytest.raises(ConfigError, match=r"p\.yaml:2:1: not valid YAML"):
        resolve_prices(load_settings(home=tmp_path, prices_file=path))
    path.write_text("- 0.05\n")
    with pytest.raises(ConfigError, match="expected a mapping of prices"):
        resolve_prices(load_settings(home=tmp_path, prices_file=path))


def test_a_named_prices_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such prices file"):
        resolve_prices(load_settings(home=tmp_path, prices_file=tmp_path / "nope.yaml"))


def test_a_bad_environment_price_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_PRICES__VCPU_HOUR", "cheap")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "KILN_PRICES__VCPU_HOUR: Input should be a valid number" in str(e.value)
    monkeypatch.setenv("KILN_PRICES__VCPU_HOUR", "0.1")
    monkeypatch.setenv("KILN_PRICES__TRAINING_SPOT_DISCOUNT", "1")
    with pytest.raises(ConfigError, match="KILN_PRICES__TRAINING_SPOT_DISCOUNT"):
        load_settings()


def test_a_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--max-workers"):
        load_settings(max_workers=0)


def test_the_cli_answers_a_bad_setting_with_an_error_not_a_traceback(tmp_path: Path) -> None:
    result = kiln_cli("status", cwd=tmp_path, env={"KILN_PRICES__VCPU_HOUR": "cheap"})
    assert result.returncode == 2
    assert "KILN_PRICES__VCPU_HOUR" in result.stderr and "Traceback" not in result.stderr


def test_prices_as_one_variable_that_is_not_json_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KILN_PRICES", "cheap")
    with pytest.raises(ConfigError, match="KILN_PRICES__VCPU_HOUR"):
        load_settings()


def test_a_child_run_of_the_scheduler_rebuilds_the_settings_prices_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler hands its settings to each `kiln run` as KILN_* variables: the child
    must be able to read them back (the price table is inherited as KILN_PRICES__*)."""
    from kiln.scheduler._child import child_env

    monkeypatch.setenv("KILN_PRICES__VCPU_HOUR", "0.05")
    (tmp_path / "p.yaml").write_text("storage_gb_month: 0.02\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(home=Path("home"), prices_file=Path("p.yaml"))
    env = child_env(settings)
    monkeypatch.chdir("/")
    for key in [k for k in os.environ if k.startswith("KILN_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("KILN_"):
            monkeypatch.setenv(key, value)
    rebuilt = resolve_prices(load_settings())
    assert (rebuilt.vcpu_hour, rebuilt.storage_gb_month) == (0.05, 0.02)
