"""What every part of the store shares: the attributes `Store` sets, declared for the mixins
that make it up (sources.py, items.py, alerts.py); `_insert`; the values that end a source's
lease; the source label alerts and stories show; the advisory lock keys. `Store` is in repo.py.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, case
from sqlalchemy.dialects import postgresql, sqlite

from monitor.store.models import Source
from monitor.store.storyindex import StoryIndex

STORY_LOCK = 0x6D6F6E69746F72  # PostgreSQL advisory lock key for story assignment
SOURCES_LOCK = 0x6D6F6E73726373  # … and for making the sources follow feeds.yaml


def _label(source: Source, publisher: str | None = None) -> str:
    name = source.name or source.feed_title or source.url
    return f"{publisher} via {name}" if publisher else name


class StoreBase:
    engine: Engine
    reader: Engine
    dialect: str
    instance: str
    story_index: StoryIndex

    def _insert(self, model: type) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(model)
        if self.dialect == "sqlite":
            return sqlite.insert(model)
        raise NotImplementedError(f"unsupported database {self.dialect!r}")

    def _unleased(self, columns: Any = Source) -> dict[str, Any]:
        """Values that end this instance's lease on a source it has polled (and leave
        another instance's alone: its lease outlived ours, and it is polling now).
        `columns`: the model, or its table's columns for a Core statement."""
        mine = columns.leased_by == self.instance
        return {"leased_until": case((mine, None), else_=columns.leased_until),
                "leased_by": case((mine, None), else_=columns.leased_by)}
