"""Alembic environment: runs on the connection that ``reel.store.db.migrate`` hands over."""

from alembic import context

from reel.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the CLI autogenerate path
    raise RuntimeError("run migrations through reel.store.db.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
