"""The store: SQLite or PostgreSQL through SQLAlchemy 2, schema by Alembic migrations."""

from sqlalchemy.exc import SQLAlchemyError

from monitor.store.repo import STATES, AlertRow, AttemptRow, Copy, Known, Outgoing, \
    FeedRow, PendingAlert, Planned, SaveOutcome, SourceState, Store, StoryView, Unchanged

# What the store raises when the database fails (locked past its timeout, unreachable, …).
STORE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError,)

__all__ = ["STORE_ERRORS", "STATES", "AlertRow", "AttemptRow", "Copy", "Known", "Outgoing", "PendingAlert",
           "Planned", "SaveOutcome", "SourceState", "Store", "StoryView", "FeedRow", "Unchanged"]
