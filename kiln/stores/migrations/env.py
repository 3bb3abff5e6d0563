"""Alembic environment: migrations run only through MetadataStore.upgrade(), on its connection."""

from alembic import context

from kiln.stores.metadata.tables import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "kiln migrations run through MetadataStore.upgrade() (`kiln db upgrade`),"
        " which passes its connection in config.attributes['connection']"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
