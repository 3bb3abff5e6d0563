"""Reading a file of rows for batch scoring (`kiln predict`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kiln.errors import DataError

__all__ = ["read_rows"]


def read_rows(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="pass --input a .csv, .parquet or .json file")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".json":
            return pd.read_json(path, orient="records")
        if path.suffix in (".csv", ".gz"):
            return pd.read_csv(path)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot be read ({e})", hint="check the file's format") from e
    raise DataError(
        f"{path}: unknown file type {path.suffix!r}", hint="use .csv, .parquet or .json"
    )
