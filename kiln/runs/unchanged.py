"""Is a new run identical to what production serves? Then retraining would promote nothing new.

A run is *unchanged* when its data snapshot digest, config digest and code are those recorded in
the production version's lineage. "Code" is two things, both compared:

- ``code_revision``: the git commit of the folder of kiln.yaml. A tree with uncommitted changes
  (``+dirty``) is never unchanged: what is uncommitted cannot be told apart.
- ``code_digest``: SHA-256 of the Kiln version, Python and the model libraries' versions
  (the environment lock), and the source of the ``model.train`` module when there is one. Outside
  git (no revision on either side) this alone stands for the code.

A production version from before ``code_digest`` was recorded is never unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import kiln
from kiln.config.loader import LoadedConfig
from kiln.registry.package import environment_lock
from kiln.stores import Stores

__all__ = [
    "RunIdentity",
    "code_digest",
    "model_distributions",
    "production_identical",
    "unchanged_from",
]


@dataclass(frozen=True)
class RunIdentity:
    data_digest: str
    config_digest: str
    code_revision: str | None
    code_digest: str


def model_distributions(estimator: str | None) -> tuple[str, ...]:
    """The installed distributions that provide the estimator's top-level package."""
    if not estimator:
        return ()
    root = estimator.split(".")[0]
    return tuple(importlib.metadata.packages_distributions().get(root, [root]))


def code_digest(loaded: LoadedConfig) -> str:
    model = loaded.config.model
    parts: dict[str, Any] = {
        "kiln": kiln.__version__,
        "environment": environment_lock(model_distributions(model.estimator)),
    }
    if model.train is not None:
        module = model.train.partition(":")[0]
        source = _module_file(loaded.base_dir, module)
        parts["train"] = (
            hashlib.sha256(source.read_bytes()).hexdigest() if source else f"module {module}"
        )
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _module_file(base_dir: Path, module: str) -> Path | None:
    rel = Path(*module.split("."))
    for candidate in (base_dir / rel.with_suffix(".py"), base_dir / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def unchanged_from(run: RunIdentity, production: dict[str, Any]) -> bool:
    """Whether ``run`` is identical to the production version whose lineage is ``production``."""
    revision = run.code_revision
    if revision is not None and revision.endswith("+dirty"):
        return False
    return (
        production.get("data_digest") == run.data_digest
        and production.get("config_digest") == run.config_digest
        and production.get("code_revision") == revision
        and production.get("code_digest") == run.code_digest
    )


def production_identical(stores: Stores, pipeline: str, run: RunIdentity) -> int | None:
    """The production version that ``run`` would merely repeat, if any."""
    with stores.metadata.read() as uow:
        production = uow.versions.by_stage(pipeline, "production")
    for version in production:
        if unchanged_from(run, version.lineage):
            return version.version
    return None
