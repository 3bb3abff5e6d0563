"""A model version's package: one content-addressed manifest naming content-addressed artifacts.

The registry records the manifest's SHA-256; the manifest records each artifact's SHA-256. A
package is loaded only when every digest matches, so a tampered byte anywhere is refused.
"""

from __future__ import annotations

import importlib.metadata
import pickle
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from kiln.errors import IntegrityError
from kiln.stores.content import ContentStore

__all__ = [
    "MANIFEST_FORMAT",
    "LoadedPackage",
    "check_environment",
    "environment_lock",
    "environment_mismatches",
    "load_package",
    "save_manifest",
]

MANIFEST_FORMAT = 1
_LOCKED = ("numpy", "pandas", "scikit-learn", "lightgbm", "scipy", "pyarrow")


def environment_lock(extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Python and the versions of the libraries a model's pickle depends on."""
    packages = {}
    for name in sorted({*_LOCKED, *extra}):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "packages": packages}


def environment_mismatches(lock: Mapping[str, Any]) -> list[str]:
    """Libraries whose major.minor version here differs from the package's lock."""
    here = environment_lock(tuple(lock.get("packages", {})))
    problems = []
    for name, wanted in lock.get("packages", {}).items():
        have = here["packages"].get(name)
        if have is None:
            problems.append(f"{name} {wanted} is not installed")
        elif _minor(have) != _minor(wanted):
            problems.append(f"{name}: package built with {wanted}, this process has {have}")
    if _minor(here["python"]) != _minor(lock.get("python", here["python"])):
        problems.append(f"python: package built with {lock['python']}, this is {here['python']}")
    return problems


def check_environment(manifest: Mapping[str, Any], *, label: str) -> None:
    """IntegrityError when the package's environment lock disagrees with this process on the
    major.minor version of a library its models depend on (a pickle may load and answer wrong,
    or not load at all). Every loader checks it: gates, `kiln predict`, the server."""
    problems = environment_mismatches(manifest.get("environment") or {})
    if problems:
        raise IntegrityError(
            f"{label} was built with other library versions than this environment has: "
            + "; ".join(problems),
            hint="load it in an environment with the same major.minor versions,"
            " or re-run the pipeline here to rebuild it",
        )


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def save_manifest(content: ContentStore, manifest: Mapping[str, Any]) -> str:
    return content.put(orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))


@dataclass(frozen=True)
class LoadedPackage:
    digest: str
    manifest: dict[str, Any]
    models: dict[str, Any]
    fallback: Any


def load_package(content: ContentStore, digest: str, *, label: str) -> LoadedPackage:
    """Load and verify a package; ``label`` (e.g. "flights v3") names it in every error.

    Refused (IntegrityError) when a digest does not match, or when the manifest's environment
    lock disagrees with this process (:func:`check_environment`), before any pickle is loaded.
    """
    raw = content.get(digest, what=f"the manifest of {label}")
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise IntegrityError(f"the manifest of {label} is not valid JSON: {e}") from e
    if manifest.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(
            f"the manifest of {label} has format {manifest.get('format')!r}; "
            f"this Kiln reads format {MANIFEST_FORMAT}",
            hint="upgrade Kiln, or re-run the pipeline to rebuild the version",
        )
    check_environment(manifest, label=label)
    models = {
        seg: _load_model(content, ref, what=f"segment {seg!r} of {label}")
        for seg, ref in manifest["models"].items()
    }
    fallback = _load_model(content, manifest["fallback"], what=f"the fallback model of {label}")
    return LoadedPackage(digest=digest, manifest=manifest, models=models, fallback=fallback)


def _load_model(content: ContentStore, ref: Mapping[str, Any], *, what: str) -> Any:
    blob = content.get(ref["sha256"], what=what)
    try:
        return pickle.loads(blob)  # verified against the registry's digest just above
    except Exception as e:
        raise IntegrityError(
            f"{what} cannot be unpickled ({type(e).__name__}: {e})",
            hint="the libraries here may differ from the ones it was trained with; "
            "compare `kiln models show` environment with this one",
        ) from e
