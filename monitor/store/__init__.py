"""The store: SQLite or PostgreSQL through SQLAlchemy 2, schema by Alembic migrations."""

from monitor.store.repo import Copy, Known, Outgoing, PendingAlert, SaveOutcome, SourceState, \
    Store, StoryView

__all__ = ["Copy", "Known", "Outgoing", "PendingAlert", "SaveOutcome", "SourceState", "Store",
           "StoryView"]
