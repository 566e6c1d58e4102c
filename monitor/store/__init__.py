"""The store: SQLite or PostgreSQL through SQLAlchemy 2, schema by Alembic migrations."""

from monitor.store.repo import STATES, AlertRow, AttemptRow, Copy, Known, Outgoing, \
    FeedRow, PendingAlert, Planned, SaveOutcome, SourceState, Store, StoryView, Unchanged

__all__ = ["STATES", "AlertRow", "AttemptRow", "Copy", "Known", "Outgoing", "PendingAlert",
           "Planned", "SaveOutcome", "SourceState", "Store", "StoryView", "FeedRow", "Unchanged"]
