"""Alembic migrations of the inforank schema (``alembic upgrade head``)."""
