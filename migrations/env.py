"""Alembic environment: the URL comes from the config, or INFORANK_DATABASE_URL, or SQLite."""

from __future__ import annotations

import os

from alembic import context

from indexer.db.engine import make_engine
from indexer.db.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    return os.environ.get("INFORANK_DATABASE_URL", "sqlite:///data/inforank.sqlite")


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
