"""The store: SQLite or PostgreSQL through SQLAlchemy 2, schema by Alembic migrations."""

from sqlalchemy.exc import InterfaceError, OperationalError, TimeoutError

from monitor.store.repo import STATES, AlertRow, AttemptRow, Copy, Known, Outgoing, \
    FeedRow, PendingAlert, Planned, SaveOutcome, SourceState, Store, StoryView, Unchanged

# What the store raises when the database is unavailable (locked past its busy timeout,
# unreachable, failing over, out of pooled connections): the database's trouble, not the
# caller's. A statement it refuses (a value too long, a constraint) is not one of these.
STORE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, TimeoutError)

__all__ = ["STORE_ERRORS", "STATES", "AlertRow", "AttemptRow", "Copy", "Known", "Outgoing",
           "PendingAlert", "Planned", "SaveOutcome", "SourceState", "Store", "StoryView",
           "FeedRow", "Unchanged"]
