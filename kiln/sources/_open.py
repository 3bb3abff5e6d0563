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


def open_source(
    spec: str, *, base_dir: Path, where: str = "data.source", query_where: str | None = None
) -> Source:
    """The Source for ``spec`` (``data.source`` of kiln.yaml).

    Relative paths resolve against ``base_dir`` (the folder of kiln.yaml). Files are checked
    here; databases are only reached on ``read``. Errors about the source start with ``where``;
    errors about a query (it fails, returns nothing) with ``query_where`` (default: ``where``).
    """
    q = query_where
    spec = spec.strip()
    scheme = _SCHEME.match(spec)
    if scheme and scheme.group(1).lower() == "duckdb":
        # SQLAlchemy's convention: duckdb:///rel.duckdb is relative, duckdb:////abs is absolute.
        rest = spec[scheme.end() :]
        path = rest[1:] if rest.startswith("/") else rest
        return DuckDBFileSource(_existing(path, spec, base_dir, where), where=where, query_where=q)
    if scheme:
        return SQLSource(spec, base_dir=base_dir, where=where, query_where=q)
    lowered = spec.lower()
    if lowered.endswith(".duckdb"):
        return DuckDBFileSource(_existing(spec, spec, base_dir, where), where=where, query_where=q)
    for suffix, fmt in _FILE_FORMATS:
        if lowered.endswith(suffix):
            found = _existing(spec, spec, base_dir, where)
            return FileSource(found, fmt, where=where, query_where=q)
    raise SourceError(
        f"{where}: cannot tell what kind of source {spec!r} is",
        hint=f"data.source must be {_KINDS}",
    )


def runs_in_duckdb(spec: str) -> bool:
    """Whether data.query runs in DuckDB (files, .duckdb) rather than a database reached by URL,
    so that hints can suggest DuckDB SQL."""
    scheme = _SCHEME.match(spec.strip())
    return scheme is None or scheme.group(1).lower() == "duckdb"


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
