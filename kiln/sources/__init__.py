"""Reading training data: DuckDB (embedded default), parquet/csv files, any SQLAlchemy URL.

One contract, ``Source.read(query) -> pyarrow.Table``; ``open_source`` picks the backend
from ``data.source``. ``checks`` holds the checks run on what was read.
"""

from kiln.sources._base import Source
from kiln.sources._open import open_source, runs_in_duckdb
from kiln.sources._probe import distinct_values, sample_rows
from kiln.sources.checks import check_columns, validate_data

__all__ = [
    "Source",
    "check_columns",
    "distinct_values",
    "open_source",
    "runs_in_duckdb",
    "sample_rows",
    "validate_data",
]
