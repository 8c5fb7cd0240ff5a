"""Alembic migrations of the metadata store's schema, run by :mod:`dataflywheel.store.migrate`.

A schema change is a file in ``versions/`` whose ``down_revision`` is the current head (the
template is ``script.py.mako``); ``tests/test_store_migrations.py`` fails while the mapped
tables and the migrated schema differ."""
