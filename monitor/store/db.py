"""Engines and migrations: the one place that knows SQLite from PostgreSQL.

SQLite runs in WAL mode with a busy timeout, and every transaction starts with
`BEGIN IMMEDIATE`, so two writers queue for the lock instead of failing half-way with
"database is locked". `postgresql://user@host/db` works as written: the psycopg 3 driver is
picked when installed (`pip install monitor[postgres]`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
MIGRATION_LOCK = 0x6D6F6E6D6967  # PostgreSQL advisory lock key for migrations


def engine_url(url: str) -> str:
    """Pick a driver for bare `postgresql://` / `postgres://` URLs."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1)
                      if url.startswith("postgres://") else url)
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg") is not None:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, *, reads_only: bool = False) -> Engine:
    """An engine for `url`. On SQLite its transactions begin `IMMEDIATE` (taking the write
    lock) unless `reads_only`: an engine for queries, whose transactions take no lock at all in
    WAL mode and so never queue behind a long write."""
    url = engine_url(url)
    if make_url(url).get_backend_name() != "sqlite":
        # READ COMMITTED whatever the server's default: a story transaction must see every
        # item committed before it took the story lock (monitor.store.storyindex).
        return create_engine(url, pool_pre_ping=True, isolation_level="READ COMMITTED")
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN" if reads_only else "BEGIN IMMEDIATE")

    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Instances started together queue here: the first migrates, the others find the
            # schema at head. (PostgreSQL runs DDL in the transaction, which holds the lock.)
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
