"""Alembic environment: always driven programmatically by `ledger.store.database.upgrade`,
which passes an open connection in `config.attributes["connection"]`."""

from __future__ import annotations

from alembic import context

from ledger.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `ledger db upgrade --db URL`")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
