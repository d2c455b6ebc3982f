"""Alembic environment: migrations run on the engine execflow hands over."""

from __future__ import annotations

from alembic import context

from execflow.store.schema import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
