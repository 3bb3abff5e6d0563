"""A run's data snapshot: the extracted rows as Parquet in the content store.

The digest is the run's data lineage (``lineage["data_digest"]``): a run writes it once, and a
resumed run, a gate, or the monitor reads exactly the rows the version was trained on.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from kiln.stores.content import ContentStore

__all__ = ["load_snapshot", "snapshot"]


def snapshot(content: ContentStore, table: pa.Table) -> str:
    """Store the extracted rows as Parquet; the digest is the run's data lineage."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return content.put(buf.getvalue())


def load_snapshot(content: ContentStore, digest: str, *, label: str) -> pa.Table:
    return pq.read_table(io.BytesIO(content.get(digest, what=f"the data snapshot of {label}")))
