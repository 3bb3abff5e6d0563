"""Opening the stores a run, a CLI command, the server or a gate works on, from the Settings."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.settings import Settings
from kiln.stores.artifacts import FsspecArtifactStore
from kiln.stores.content import ContentStore
from kiln.stores.metadata import MetadataStore

__all__ = ["Stores", "open_stores"]


@dataclass(frozen=True)
class Stores:
    metadata: MetadataStore
    content: ContentStore

    def close(self) -> None:
        self.metadata.dispose()


def open_stores(settings: Settings, *, upgrade: bool = False) -> Stores:
    """``upgrade=True`` is the explicit start-up migration of `kiln run` and `kiln db upgrade`,
    the only opens that may create the home folder and a SQLite file; every other command opens
    an existing database (a missing SQLite file is a StoreError naming it) and only checks that
    the schema is current."""
    if upgrade and (settings.db_url is None or settings.artifacts_url is None):
        settings.home.mkdir(parents=True, exist_ok=True)
    metadata = MetadataStore(settings.metadata_url, create=upgrade)
    if upgrade:
        metadata.upgrade()
    else:
        metadata.check_schema()
    content = ContentStore(FsspecArtifactStore(settings.artifact_root))
    return Stores(metadata=metadata, content=content)
