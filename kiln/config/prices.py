"""The price table in force: the defaults, then a prices file, then ``KILN_PRICES__*``."""

from __future__ import annotations

from pathlib import Path

from kiln.config.loader import read_yaml, validate_yaml
from kiln.errors import ConfigError
from kiln.settings import PRICES_SOURCE, Prices, Settings

__all__ = ["PRICES_SOURCE", "prices_path", "resolve_prices"]

_HINT = (
    "a prices file is YAML with the keys currency, vcpu_hour, memory_gib_hour,"
    " storage_gb_month and training_spot_discount, e.g. `vcpu_hour: 0.04`"
)


def prices_path(settings: Settings) -> Path | None:
    """The prices file in force: ``KILN_PRICES_FILE``, else ``home/prices.yaml`` if it exists."""
    if settings.prices_file is not None:
        return settings.prices_file
    default = settings.home / "prices.yaml"
    return default if default.is_file() else None


def resolve_prices(settings: Settings) -> Prices:
    """The defaults, overridden by the prices file, overridden by each ``KILN_PRICES__<KEY>``.
    A missing or malformed file is a ConfigError at ``file:line:column``."""
    prices = Prices()
    path = prices_path(settings)
    if path is not None:
        prices = _read(path)
    given = settings.prices.model_fields_set
    if given:
        prices = Prices.model_validate(
            prices.model_dump() | {k: getattr(settings.prices, k) for k in given}
        )
    return prices


def _read(path: Path) -> Prices:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such prices file",
            hint="create it, or unset KILN_PRICES_FILE to use the default prices",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})", hint="save it as UTF-8 text") from e
    root, data = read_yaml(text, path)
    if data is None:
        return Prices()
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1:1: expected a mapping of prices, got {type(data).__name__}", hint=_HINT
        )
    return validate_yaml(Prices, data, root, path, what="the price table", hint=_HINT)
