"""When the newest label file of a pipeline arrived: a stored window computed before it may have
more labelled requests now, so the monitor recomputes its live performance.

Label files are ``<root>/labels/pipeline=<name>/<received_ms>-<uuid>.parquet`` (the label
store's layout): their names say when they arrived, so one listing answers without reading a
file.
"""

from __future__ import annotations

from datetime import UTC, datetime

import fsspec

from kiln.errors import StoreError

__all__ = ["labels_received_since"]


def labels_received_since(root_url: str, pipeline: str, since: datetime) -> datetime | None:
    """The arrival time of the newest label file of ``pipeline`` received after ``since``;
    None when there is none."""
    try:
        fs, root = fsspec.core.url_to_fs(root_url)
        names = fs.ls(f"{root.rstrip('/')}/labels/pipeline={pipeline}", detail=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot list the labels of {pipeline} under {root_url}: {e}") from e
    newest: datetime | None = None
    for name in names:
        stem = str(name).rsplit("/", 1)[-1]
        head = stem.split("-", 1)[0]
        if not stem.endswith(".parquet") or not head.isdigit():
            continue
        at = datetime.fromtimestamp(int(head) / 1000, tz=UTC)
        if at > since and (newest is None or at > newest):
            newest = at
    return newest
