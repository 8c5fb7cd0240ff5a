"""Alembic's environment: migrations run on the connection the caller hands over in
``config.attributes["connection"]`` (see :func:`dataflywheel.store.migrate.upgrade`)."""

from __future__ import annotations

from alembic import context

from dataflywheel.store.migrate import target_metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=target_metadata(),
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
