"""One typed Settings object, built once at start-up and passed down (no globals).

Values come from keyword arguments (CLI flags), then ``KILN_*`` environment variables, then
the defaults: everything embedded under ``.kiln/`` in the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from kiln.errors import ConfigError

__all__ = ["Prices", "Settings", "load_settings", "settings_env"]

PRICES_SOURCE = (
    "on-demand list prices: Google Compute Engine N1 predefined vCPU ($0.031611/vCPU-hour) and"
    " memory ($0.004237/GiB-hour) in us-central1, the figures OpenCost's default pricing uses;"
    " Amazon S3 Standard in us-east-1 ($0.023/GB-month, first 50 TB)"
)


class Prices(BaseModel):
    """The price table cost is computed with (USD by default). Defaults: see ``PRICES_SOURCE``;
    override them per deployment in a prices file (``KILN_PRICES_FILE``, YAML, the same keys)
    or one by one in the environment (``KILN_PRICES__VCPU_HOUR=0.04``), which wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", min_length=1, max_length=8)
    vcpu_hour: float = Field(default=0.031611, ge=0, description="Price of one vCPU for an hour.")
    memory_gib_hour: float = Field(
        default=0.004237, ge=0, description="Price of one GiB of memory for an hour."
    )
    storage_gb_month: float = Field(
        default=0.023, ge=0, description="Price of one GB (10^9 bytes) stored for a month."
    )
    training_spot_discount: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Share taken off training compute (tasks and a run's steps) when training"
        " runs on spot or preemptible machines, e.g. 0.6; serving and storage keep list prices.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KILN_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    home: Path = Field(default=Path(".kiln"), description="Folder of the embedded defaults.")
    db_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the metadata store (default: SQLite in home)."
    )
    artifacts_url: str | None = Field(
        default=None, description="fsspec URL of the artifact store (default: folder in home)."
    )
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = Field(
        default=None, description="Ray cluster address; unset starts a local Ray cluster."
    )
    max_workers: int | None = Field(
        default=None, ge=1, description="Cap on training processes (default: resources.cpus)."
    )
    reload_seconds: float = Field(
        default=2.0, gt=0, description="How often the server re-reads the registry."
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest predict body the server reads (413 beyond it, refused from its"
        " Content-Length before reading). 8 MiB holds a full batch (10,000 rows) of rows up to"
        " ~800 bytes of JSON (a row of 10 features is ~150-300 bytes).",
    )
    admin_token: SecretStr | None = None
    ui_session_hours: float = Field(
        default=12.0,
        gt=0,
        le=24 * 30,
        description="How long a sign-in to `kiln ui` lasts before the login page asks again.",
    )
    ui_cost_cache_seconds: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="`kiln ui` keeps cost reports this long and recomputes them in the"
        " background (pages show them at once, with the time they were computed); 0: every"
        " page view computes its report.",
    )
    predict_token: SecretStr | None = None
    capture_flush_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="Each server process writes its queued captures at least this often: a"
        " process killed with SIGKILL loses about this many seconds of captures (SIGTERM loses"
        " none).",
    )
    capture_flush_rows: int = Field(
        default=5_000,
        ge=1,
        description="Captures per Parquet file at most; a process writes as soon as this many"
        " are queued.",
    )
    capture_max_queue: int = Field(
        default=100_000,
        ge=1,
        description="Captures a server process holds unwritten at most (queued, or kept after"
        " failed writes); beyond it new captures are dropped and counted, requests are not.",
    )
    capture_max_backlog_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Arrow bytes of unwritten captures a server process holds at most; beyond"
        " it new captures are dropped and counted.",
    )

    prices: Prices = Field(
        default_factory=Prices,
        description="The price table; ``KILN_PRICES__<FIELD>`` sets one price (it wins over the"
        " prices file). Read it through ``kiln.config.prices.resolve_prices``.",
    )
    prices_file: Path | None = Field(
        default=None,
        description="YAML price table (keys of Prices); default: home/prices.yaml if it exists.",
    )
    serving_cpus: float = Field(
        default=1.0,
        gt=0,
        description="vCPUs one server process reserves: serving cost charges max(reserved, used)"
        " per process, as OpenCost charges max(requested, used).",
    )
    usage_flush_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How often each server process records its serving usage in the metadata"
        " store (and on a clean exit); a process killed with SIGKILL loses at most this much.",
    )

    @property
    def metadata_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.home / 'kiln.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        if self.artifacts_url:
            return self.artifacts_url
        return str((self.home / "artifacts").resolve())


def load_settings(**given: object) -> Settings:
    """The Settings of ``given`` (CLI flags) and the environment; a bad value is a ConfigError
    naming its ``KILN_*`` variable (or flag), never a traceback."""
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except SettingsError as e:  # a nested setting that is not JSON, e.g. KILN_PRICES=cheap
        raise ConfigError(
            f"bad setting: {e}",
            hint="set one price at a time, e.g. KILN_PRICES__VCPU_HOUR=0.04, or a prices file"
            " (KILN_PRICES_FILE)",
        ) from None
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = [str(x) for x in err["loc"]]
            name = "KILN_" + "__".join(loc).upper() if loc else "KILN_*"
            if loc and loc[0] in given:
                name = "--" + loc[0].replace("_", "-")
            problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(
            f"{len(problems)} bad setting(s)",
            problems=problems,
            hint="fix the environment variable or flag; `kiln --help` lists the settings",
        ) from None


def settings_env(settings: Settings) -> dict[str, str | None]:
    """The ``KILN_*`` variables that rebuild ``settings`` in a child process (a scheduled `kiln
    run`, a server worker), whether they came from flags or variables; None: unset it. Paths
    and store URLs are made absolute (a child may start elsewhere). The price table is left
    out: it can only come from ``KILN_PRICES__*`` variables, which the child inherits."""
    values = settings.model_dump(exclude={"prices"})
    values |= {
        "home": settings.home.resolve(),
        "db_url": settings.metadata_url,
        "artifacts_url": settings.artifact_root,
        "prices_file": settings.prices_file and settings.prices_file.resolve(),
    }
    env: dict[str, str | None] = {}
    for name, value in values.items():
        key = f"KILN_{name.upper()}"
        if value is None:
            env[key] = None
        elif isinstance(value, SecretStr):
            env[key] = value.get_secret_value()
        else:
            env[key] = repr(value) if isinstance(value, float) else str(value)
    return env
