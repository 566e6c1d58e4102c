"""The schema: sources, stories, items and the alert outbox.

Uniqueness lives here, in the database: one item per (source, identity), one story per key, one
alert per (story, destination). Those constraints, not anything held in memory, are what make
"once per story per destination" hold across restarts and several instances.

Changing a table means a new Alembic migration in `monitor/migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, LargeBinary, \
    String, Text, UniqueConstraint, text, true
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Source(Base):
    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    name: Mapped[str | None] = mapped_column(String(300))
    feed_title: Mapped[str | None] = mapped_column(String(300))
    interval_seconds: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(default=True)
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_poll_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    # An interval set in feeds.yaml is kept; otherwise it adapts to how often the source
    # publishes, and `current_interval_seconds` is where it has got to.
    pinned: Mapped[bool] = mapped_column(default=True, server_default=true())
    current_interval_seconds: Mapped[int | None] = mapped_column(Integer)
    body_hash: Mapped[str | None] = mapped_column(String(64))  # of the last body parsed
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failure_noticed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An operator notice claimed and not yet known to be sent ("failing", "recovered",
    # "disabled"), and until when its sender holds it: past that, the sender died, and
    # another sends it.
    notice_pending: Mapped[str | None] = mapped_column(String(16))
    notice_pending_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # 410 Gone, say
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    last_item_count: Mapped[int | None] = mapped_column(Integer)  # entries in the last body
    ttl_seconds: Mapped[int | None] = mapped_column(Integer)  # the feed's RSS <ttl>
    # The instance polling the source, and until when (it renews this while the poll waits
    # and runs); another instance takes the source once this has passed.
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(String(64))


class Story(Base):
    __tablename__ = "stories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("source_id", "identity", name="uq_items_source_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    identity: Mapped[str] = mapped_column(String(64))
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), index=True)
    guid: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    canonical_url: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    content: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(35))
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    content_hash: Mapped[str] = mapped_column(String(64))
    # sha256 of the canonical link: items sharing it are one story, whatever their source.
    link_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    publisher: Mapped[str | None] = mapped_column(String(300))
    # The story fingerprint of the cleaned title and lead (monitor.stories: features, indexed
    # words, language), and that text.
    fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary)
    story_text: Mapped[str | None] = mapped_column(Text)
    # Rule ids this item matched when last evaluated; NULL when it was recorded quietly (older
    # than the look-back on a source's first poll) and so never evaluated.
    matched_rules: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))


class ItemKey(Base):
    """Every name under which an item may come back from its source (guid, link, host-less
    path), so a changed GUID scheme or a domain move is still the same item."""

    __tablename__ = "item_keys"

    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"),
                                           primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)


class Alert(Base):
    """The outbox: one row per (story, destination), written with the item that caused it.

    A row with a `parent_id` is a thread reply: a later copy of an already alerted story, for
    a destination that threads (Slack bot mode); those are unique per (item, destination).

    status: pending (never tried) → sending (a delivery pass holds it until `lease_until`) →
    sent | failed (will be tried again at `next_attempt_at`) | dead (given up, with the reason).
    A pass settles, releases or extends only what it still holds: the `claim` it took.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        Index("uq_alerts_story_destination", "story_id", "destination", unique=True,
              sqlite_where=text("parent_id IS NULL"),
              postgresql_where=text("parent_id IS NULL")),
        Index("uq_alerts_reply_item_destination", "item_id", "destination", unique=True,
              sqlite_where=text("parent_id IS NOT NULL"),
              postgresql_where=text("parent_id IS NOT NULL")),
        Index("ix_alerts_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    destination: Mapped[str] = mapped_column(String(100))
    # [{"id": rule id, "name": rule name, "terms": [terms that fired]}, …]
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # While a delivery pass holds the alert; another pass (or instance) skips it until then.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The pass holding it (a token of its claim): one whose lease ran out while it was stalled
    # cannot settle or give back what another pass has taken since.
    claim: Mapped[str | None] = mapped_column(String(32))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    urgent: Mapped[bool] = mapped_column(default=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id"))
    # Where the channel put the message (Slack bot mode: "channel:ts"), for thread replies.
    message_ref: Mapped[str | None] = mapped_column(String(200))


class AlertAttempt(Base):
    """Every delivery attempt of an alert, for `monitor alerts show`."""

    __tablename__ = "alert_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"),
                                          index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16))  # sent, failed, dead
    error: Mapped[str | None] = mapped_column(Text)
    grouped: Mapped[int] = mapped_column(Integer, default=1)  # alerts in the same message
