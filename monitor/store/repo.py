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
import uuid

from sqlalchemy import Engine

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

    @classmethod
    def open(cls, url: str, *, migrate_schema: bool = True) -> Store:
        engine = create_db_engine(url)
        if migrate_schema:
            migrate(engine)
        reader = create_db_engine(url, reads_only=True) if engine.dialect.name == "sqlite" \
            else None
        return cls(engine, reader)

    def close(self) -> None:
        self.engine.dispose()
        if self.reader is not self.engine:
            self.reader.dispose()
