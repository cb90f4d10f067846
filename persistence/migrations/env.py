"""Alembic's environment: always handed an open connection by :mod:`persistence.migrate`."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import persistence.models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations with `menteo-rooms migrate` (persistence.migrate), not the alembic CLI"
    )
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
