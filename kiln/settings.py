"""One typed Settings object, built once at start-up and passed down (no globals).

Values come from keyword arguments (CLI flags), then ``KILN_*`` environment variables, then
the defaults: everything embedded under ``.kiln/`` in the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KILN_", extra="forbid", frozen=True)

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
