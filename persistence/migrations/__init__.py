"""Alembic migration scripts (env.py, versions/); run through :mod:`persistence.migrate`."""
