"""The Alembic migrations build exactly the schema that tables.py declares, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from kiln.stores import MetadataStore
from kiln.stores.metadata.tables import Base


def test_migrations_match_the_models(store: MetadataStore) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_tables_exist_after_upgrade(store: MetadataStore) -> None:
    import sqlalchemy as sa

    names = set(sa.inspect(store.engine).get_table_names())
    assert set(Base.metadata.tables) <= names
    assert "alembic_version" in names
