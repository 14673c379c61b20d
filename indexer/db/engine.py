"""Engines for SQLite (embedded default) and PostgreSQL, and schema upgrades via Alembic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

import migrations
from indexer import sketch

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


SQLITE_PAGE_SIZE = 16384
#: page cache per connection, KiB (SQLite's default is 2 MiB)
SQLITE_CACHE_KIB = 65536
#: WAL size at which a commit checkpoints it back into the database, bytes (SQLite's default:
#: 1,000 pages, 16 MiB at 16 KiB pages); also the size an idle WAL is truncated to
SQLITE_WAL_BYTES = 256 * 1024 * 1024


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE``.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock when a transaction starts, which is what
    ``SELECT … FOR UPDATE`` does for one row on PostgreSQL: writers serialise instead of
    failing on a lock upgrade.
    """
    if url.startswith("sqlite"):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # a new database gets 16 KiB pages: an item_vectors row (a 2 KiB float32 vector and its
            # columns) is just over half a 4 KiB page, so the default wasted almost half of every
            # page (measured: 4.1 KB per 512-d vector at 4 KiB, see BENCHMARKS.md); an existing
            # database keeps its page size (the pragma is a no-op once tables exist)
            cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            # 64 MiB of page cache (the default is 2 MiB): the B-trees of a large collection's
            # keys stay in memory instead of being re-read on every insert
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            # checkpoint every 256 MiB of WAL instead of every 16 MiB: a bulk write dirties pages
            # all over the indexes whose keys arrive in random order (item keys; until migration
            # 0010 also the score values), and a large collection's batch alone fills 16 MiB, so
            # each commit was followed by a checkpoint writing those pages back (and syncing);
            # with a longer WAL a hot page is written back once for many commits (BENCHMARKS.md,
            # "A million pairs"). The WAL never stays larger than this.
            page = cur.execute("PRAGMA page_size").fetchone()[0]
            cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_BYTES // page}")
            cur.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_BYTES}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            # the score histogram's bucket function, used by the triggers of migration 0004
            dbapi_conn.create_function("inforank_bucket", 1, sketch.key, deterministic=True)

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # reads (see read_factory) take a snapshot without the write lock: in WAL mode they
            # neither wait for a writer nor make one wait
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ) else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the schema at ``url`` to the newest migration (``alembic upgrade head``)."""
    command.upgrade(alembic_config(url), "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


#: execution option marking read-only sessions
READ = "inforank_read"


def read_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reads only: on SQLite a deferred ``BEGIN`` (a WAL snapshot, no write lock);
    on PostgreSQL the same as :func:`session_factory`."""
    return sessionmaker(engine.execution_options(**{READ: True}), expire_on_commit=False)
