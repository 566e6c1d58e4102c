"""Store operations: what the poll and delivery stories need from the database, and no more.

Methods are synchronous and short; the async pipeline runs them in a worker thread. They take
and return plain dataclasses, never ORM objects, so nothing lazy crosses a thread or outlives
its session. Every write is one transaction.

Here: `Store`, opened and closed, made of one mixin per concern: sources.py, items.py and
alerts.py, on what they share (base.py). Their names are importable from here too.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select

from monitor.store.alerts import STATES, AlertRow, AlertsMixin, AttemptRow, PendingAlert
from monitor.store.base import SOURCES_LOCK, STORY_LOCK
from monitor.store.db import create_db_engine, migrate
from monitor.store.items import IN_CHUNK, Copy, ItemsMixin, Known, Outgoing, Planned, \
    SaveOutcome, StoryView, link_hash
from monitor.store.sources import FeedRow, SourcesMixin, SourceState, Unchanged
from monitor.store.storyindex import StoryIndex

__all__ = ["IN_CHUNK", "SOURCES_LOCK", "STATES", "STORY_LOCK", "AlertRow", "AttemptRow", "Copy",
           "FeedRow", "Known", "Outgoing", "PendingAlert", "Planned", "SaveOutcome",
           "SourceState", "Store", "StoryView", "Unchanged", "link_hash"]


class Store(SourcesMixin, ItemsMixin, AlertsMixin):
    def __init__(self, engine: Engine, reader: Engine | None = None):
        self.engine = engine
        # Where pure queries on the poll path run (SQLite: without taking the write lock).
        self.reader = reader or engine
        self.dialect = engine.dialect.name
        # Names this process in the leases it takes on sources.
        self.instance = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.story_index = StoryIndex()  # the story window, for this process's writes
        # The database server's time at a moment of this process's monotonic clock, as last
        # read (`measure_clock`).
        self._server_at: tuple[datetime, float] | None = None

    @classmethod
    def open(cls, url: str, *, migrate_schema: bool = True) -> Store:
        engine = create_db_engine(url)
        if migrate_schema:
            migrate(engine)
        reader = create_db_engine(url, reads_only=True) if engine.dialect.name == "sqlite" \
            else None
        return cls(engine, reader)

    @staticmethod
    def local_clock() -> datetime:
        return datetime.now(UTC)

    def clock(self) -> datetime:
        """Now, by the clock leases are taken and judged by: the database server's, so that
        instances on hosts whose clocks disagree still agree on when a lease runs out. Carried
        from its last reading by this process's monotonic clock, which a step of the host's
        clock (NTP at boot, a VM resumed) does not move. Before any reading (and on SQLite):
        this host's."""
        if self._server_at is None:
            return self.local_clock()
        server, at = self._server_at
        return server + timedelta(seconds=time.monotonic() - at)

    def measure_clock(self) -> timedelta:
        """Read the database server's clock, and return how far it is ahead of this host's.
        PostgreSQL only: SQLite is on this host, and its clock is this host's (zero)."""
        if self.dialect == "postgresql":
            with self.engine.connect() as connection:
                before, started = self.local_clock(), time.monotonic()
                server = connection.execute(select(func.clock_timestamp())).scalar_one()
                after, ended = self.local_clock(), time.monotonic()
            self._server_at = (server, (started + ended) / 2)
            return server - (before + (after - before) / 2)
        return timedelta(0)

    def close(self) -> None:
        self.engine.dispose()
        if self.reader is not self.engine:
            self.reader.dispose()
