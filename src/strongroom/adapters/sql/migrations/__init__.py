"""Alembic migrations for every table; run through ``strongroom db upgrade``."""
