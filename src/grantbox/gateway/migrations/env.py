"""Alembic environment: runs on the connection the gateway hands over."""

from __future__ import annotations

from alembic import context

from grantbox.gateway.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("grantbox migrations run through grantbox.gateway.storage.migrate()")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
