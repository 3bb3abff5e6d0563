"""``open_source``: one ``data.source`` string -> the Source that reads it."""

from __future__ import annotations

import glob
import re
from pathlib import Path

from kiln.errors import SourceError
from kiln.sources._base import Source
from kiln.sources._duckdb import DuckDBFileSource, FileFormat, FileSource
from kiln.sources._sql import SQLSource

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_GLOB_CHARS = re.compile(r"[*?\[]")
_FILE_FORMATS: tuple[tuple[str, FileFormat], ...] = (
    (".parquet", "parquet"),
    (".csv.gz", "csv"),
    (".csv", "csv"),
)
_KINDS = (
    "a .duckdb file (or duckdb:///file.duckdb), a .parquet/.csv/.csv.gz file or a glob of them "
    "(e.g. data/*.parquet), or a SQLAlchemy URL (postgresql://user@host/db, sqlite:///file.db)"
)


def open_source(spec: str, *, base_dir: Path, where: str = "data.source") -> Source:
    """The Source for ``spec`` (``data.source`` of kiln.yaml).

    Relative paths resolve against ``base_dir`` (the folder of kiln.yaml). Files are checked
    here; databases are only reached on ``read``. Every error starts with ``where``.
    """
    spec = spec.strip()
    scheme = _SCHEME.match(spec)
    if scheme and scheme.group(1).lower() == "duckdb":
        # SQLAlchemy's convention: duckdb:///rel.duckdb is relative, duckdb:////abs is absolute.
        rest = spec[scheme.end() :]
        path = rest[1:] if rest.startswith("/") else rest
        return DuckDBFileSource(_existing(path, spec, base_dir, where), where=where)
    if scheme:
        return SQLSource(spec, base_dir=base_dir, where=where)
    lowered = spec.lower()
    if lowered.endswith(".duckdb"):
        return DuckDBFileSource(_existing(spec, spec, base_dir, where), where=where)
    for suffix, fmt in _FILE_FORMATS:
        if lowered.endswith(suffix):
            return FileSource(_existing(spec, spec, base_dir, where), fmt, where=where)
    raise SourceError(
        f"{where}: cannot tell what kind of source {spec!r} is",
        hint=f"data.source must be {_KINDS}",
    )


def _existing(path_text: str, spec: str, base_dir: Path, where: str) -> Path:
    """The absolute path (or glob) of ``path_text``; it must exist (or match a file)."""
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    relative = "" if Path(path_text).expanduser().is_absolute() else f", relative to {base_dir}"
    hint = (
        "check data.source in kiln.yaml; relative paths are resolved against the folder of "
        "kiln.yaml"
    )
    if _GLOB_CHARS.search(path_text):
        if not glob.glob(str(path), recursive=True):
            raise SourceError(
                f"{where}: no file matches {path} (data.source {spec!r}{relative})", hint=hint
            )
        return path
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise SourceError(f"{where}: {path} {what} (data.source {spec!r}{relative})", hint=hint)
    return path
