"""Store operations: what the poll and delivery stories need from the database, and no more.

Methods are synchronous and short; the async pipeline runs them in a worker thread. They take
and return plain dataclasses, never ORM objects, so nothing lazy crosses a thread or outlives
its session. Every write is one transaction.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Integer, and_, bindparam, case, func, or_, select, \
    text, update
from sqlalchemy.orm import aliased
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from monitor import stories
from monitor.normalize import Item as NormalizedItem
from monitor.stories import Fingerprint
from monitor.store.db import create_db_engine, migrate
from monitor.store.models import Alert, AlertAttempt, Item, ItemKey, Source, Story
from monitor.store.storyindex import Batch, StoryIndex

STORY_LOCK = 0x6D6F6E69746F72  # PostgreSQL advisory lock key for story assignment
SOURCES_LOCK = 0x6D6F6E73726373  # … and for making the sources follow feeds.yaml


@dataclass(frozen=True)
class SourceState:
    id: int
    url: str
    name: str | None
    feed_title: str | None
    interval: timedelta
    etag: str | None
    last_modified: str | None
    first_polled_at: datetime | None
    next_poll_at: datetime
    last_polled_at: datetime | None
    last_status: int | None
    last_error: str | None
    consecutive_failures: int
    active: bool
    pinned: bool = True
    current_interval: timedelta | None = None
    body_hash: str | None = None
    last_success_at: datetime | None = None
    failing_since: datetime | None = None
    failure_noticed_at: datetime | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    last_item_count: int | None = None
    ttl: timedelta | None = None  # the feed's RSS <ttl>, as last read
    leased_until: datetime | None = None

    @property
    def label(self) -> str:
        return self.name or self.feed_title or self.url

    @property
    def polling_interval(self) -> timedelta:
        """The interval in force: the configured one, or where adaptation has got to."""
        return self.interval if self.pinned else self.current_interval or self.interval


class FeedRow(NamedTuple):
    """A source as feeds.yaml names it. `pinned`: its interval was set there, so it is kept
    rather than adapted."""

    url: str
    name: str | None
    interval: timedelta
    pinned: bool = True


@dataclass(frozen=True)
class Unchanged:
    """A successful poll that brought nothing to store: a 304, or the same body again."""

    source_id: int
    status: int
    etag: str | None
    last_modified: str | None
    next_poll_at: datetime
    interval: timedelta | None = None  # the adapted interval, for a source that adapts


@dataclass(frozen=True)
class Known:
    item_id: int
    content_hash: str
    matched_rules: tuple[str, ...] | None  # None: recorded quietly, never evaluated


STATES = ("pending", "sending", "sent", "failed", "dead")


@dataclass(frozen=True)
class Planned:
    """An alert to raise at one destination."""

    rules: list[dict[str, Any]]  # [{"id", "name", "terms"}] of every rule routing there
    not_before: datetime | None = None  # a digest or quiet hours hold it until then
    urgent: bool = False
    threads: bool = False  # a later copy of the story becomes a thread reply


@dataclass(frozen=True)
class Outgoing:
    """An item to record, with the alerts it should raise (none when recorded quietly)."""

    item: NormalizedItem
    matched_rules: tuple[str, ...] | None  # None: recorded quietly
    alerts: dict[str, Planned]  # destination -> the alert
    fingerprint: Fingerprint | None = None  # for grouping a new item into a story
    item_id: int | None = None  # the stored item an edited one updates


@dataclass(frozen=True)
class SaveOutcome:
    new: int
    updated: int
    alerts: int


@dataclass(frozen=True)
class PendingAlert:
    id: int
    destination: str
    rules: list[dict[str, Any]]
    attempts: int
    created_at: datetime
    title: str
    url: str | None
    summary: str
    content: str
    published_at: datetime | None
    first_seen_at: datetime
    source_name: str
    also: tuple[str, ...] = ()  # the other outlets that reported the story so far
    urgent: bool = False
    reply_to: str | None = None  # a thread reply: the message_ref of the story's first alert


@dataclass(frozen=True)
class AlertRow:
    """An alert as `monitor alerts` shows it."""

    id: int
    status: str
    destination: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None
    last_error: str | None
    title: str
    url: str | None
    source: str
    rules: list[dict[str, Any]]
    reply: bool


@dataclass(frozen=True)
class AttemptRow:
    at: datetime
    outcome: str
    error: str | None
    grouped: int


@dataclass(frozen=True)
class Copy:
    source: str
    title: str
    url: str | None
    first_seen_at: datetime


@dataclass(frozen=True)
class StoryView:
    id: int
    created_at: datetime
    copies: tuple[Copy, ...]  # first seen first
    alerts: dict[str, str]  # destination -> status


def _state(source: Source) -> SourceState:
    return SourceState(
        id=source.id, url=source.url, name=source.name, feed_title=source.feed_title,
        interval=timedelta(seconds=source.interval_seconds), etag=source.etag,
        last_modified=source.last_modified, first_polled_at=source.first_polled_at,
        next_poll_at=source.next_poll_at, last_polled_at=source.last_polled_at,
        last_status=source.last_status, last_error=source.last_error,
        consecutive_failures=source.consecutive_failures, active=source.active,
        pinned=source.pinned, current_interval=None if source.current_interval_seconds is None
        else timedelta(seconds=source.current_interval_seconds), body_hash=source.body_hash,
        last_success_at=source.last_success_at, failing_since=source.failing_since,
        failure_noticed_at=source.failure_noticed_at, disabled_at=source.disabled_at,
        disabled_reason=source.disabled_reason, last_item_count=source.last_item_count,
        ttl=None if source.ttl_seconds is None else timedelta(seconds=source.ttl_seconds),
        leased_until=source.leased_until)


IN_CHUNK = 500  # values per `IN (…)`, well under every backend's limit on parameters


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start:start + IN_CHUNK]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def link_hash(item: NormalizedItem) -> str | None:
    """Items sharing this are one story: only a link that identifies the item counts."""
    if item.canonical_url and f"url:{item.canonical_url}" in item.keys:
        return _sha(item.canonical_url)
    return None


def _label(source: Source, publisher: str | None = None) -> str:
    name = source.name or source.feed_title or source.url
    return f"{publisher} via {name}" if publisher else name


class Store:
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

    def _insert(self, model: type) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(model)
        if self.dialect == "sqlite":
            return sqlite.insert(model)
        raise NotImplementedError(f"unsupported database {self.dialect!r}")

    # Sources -------------------------------------------------------------------------------

    def sync_sources(self, feeds: Iterable[tuple[Any, ...]], now: datetime) -> None:
        """Make the sources table follow feeds.yaml: add, update, deactivate (never delete:
        a feed that comes back keeps its history). Each feed is a `FeedRow` or a tuple of its
        fields. A source its server disabled (410 Gone) stays disabled until `enable_source`."""
        wanted = {row.url: row for row in (FeedRow(*feed) for feed in feeds)}
        with Session(self.engine) as session, session.begin():
            if self.dialect == "postgresql":
                # Instances starting together would each insert the new sources.
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SOURCES_LOCK})
            existing = {s.url: s for s in session.scalars(select(Source))}
            for url, row in wanted.items():
                seconds = int(row.interval.total_seconds())
                source = existing.get(url)
                if source is None:
                    session.add(Source(url=url, name=row.name, interval_seconds=seconds,
                                       pinned=row.pinned, active=True, created_at=now,
                                       next_poll_at=now, consecutive_failures=0))
                    continue
                if not source.active:
                    source.active = True
                    source.next_poll_at = now
                source.name = row.name
                if source.pinned != row.pinned:
                    source.pinned = row.pinned
                    source.current_interval_seconds = None
                if source.interval_seconds != seconds:
                    source.interval_seconds = seconds
                    source.current_interval_seconds = None
                    source.next_poll_at = min(source.next_poll_at, now + row.interval)
            for url, source in existing.items():
                if url not in wanted and source.active:
                    source.active = False

    def sources(self, *, active_only: bool = True,
                include_disabled: bool = False) -> list[SourceState]:
        with Session(self.engine) as session:
            query = select(Source).order_by(Source.id)
            if active_only:
                query = query.where(Source.active.is_(True))
            if not include_disabled:
                query = query.where(Source.disabled_at.is_(None))
            return [_state(s) for s in session.scalars(query)]

    def claim_due_sources(self, now: datetime, *, lease: timedelta,
                          limit: int) -> list[SourceState]:
        """Take up to `limit` due sources to poll, leased to this store's instance until
        `now + lease`: no other instance takes them meanwhile, and if this one dies they are
        taken again once the lease has passed. The poller renews the lease while a source
        waits and is polled (`renew_source_leases`); recording the poll ends it. On
        PostgreSQL, rows another instance is taking are skipped, not waited for."""
        # One statement (a Core UPDATE … RETURNING, no ORM objects): a cycle over a thousand
        # due sources takes dozens of these.
        table = Source.__table__
        due = (select(table.c.id)
               .where(table.c.active.is_(True), table.c.disabled_at.is_(None),
                      table.c.next_poll_at <= now,
                      or_(table.c.leased_until.is_(None), table.c.leased_until < now))
               .order_by(table.c.next_poll_at, table.c.id).limit(limit))
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        due_ids = due.cte("due")  # evaluated once (PostgreSQL never inlines a locking CTE)
        with self.engine.begin() as connection:
            rows = connection.execute(
                update(table).where(table.c.id == due_ids.c.id)
                .values(leased_until=now + lease, leased_by=self.instance)
                .returning(*table.c)).all()
        # RETURNING keeps no order. A row has the model's attribute names.
        return [_state(row)  # type: ignore[arg-type]
                for row in sorted(rows, key=lambda r: (r.next_poll_at, r.id))]

    def renew_source_leases(self, source_ids: Sequence[int], until: datetime) -> None:
        """Keep the sources this instance is still working on (its heartbeat)."""
        if source_ids:
            with Session(self.engine) as session, session.begin():
                session.execute(update(Source).where(Source.id.in_(list(source_ids)),
                                                     Source.leased_by == self.instance)
                                .values(leased_until=until))

    def release_sources(self, source_ids: Sequence[int]) -> None:
        """Give back sources taken but not polled: due again at once, for any instance."""
        if source_ids:
            with Session(self.engine) as session, session.begin():
                session.execute(update(Source).where(Source.id.in_(list(source_ids)),
                                                     Source.leased_by == self.instance)
                                .values(leased_until=None, leased_by=None))

    def _unleased(self, columns: Any = Source) -> dict[str, Any]:
        """Values that end this instance's lease on a source it has polled (and leave
        another instance's alone: its lease outlived ours, and it is polling now).
        `columns`: the model, or its table's columns for a Core statement."""
        mine = columns.leased_by == self.instance
        return {"leased_until": case((mine, None), else_=columns.leased_until),
                "leased_by": case((mine, None), else_=columns.leased_by)}

    def record_failure(self, source_id: int, *, status: int | None, error: str,
                       now: datetime, next_poll_at: datetime,
                       disable: bool = False) -> None:
        """A failed poll. `disable`: the server said the feed is gone for good."""
        values: dict[str, Any] = dict(
            last_polled_at=now, last_status=status, last_error=error[:2000],
            consecutive_failures=Source.consecutive_failures + 1, next_poll_at=next_poll_at,
            failing_since=func.coalesce(Source.failing_since, now), **self._unleased())
        if disable:
            values.update(disabled_at=now, disabled_reason=error[:2000])
        with Session(self.engine) as session, session.begin():
            session.execute(update(Source).where(Source.id == source_id).values(**values))

    def record_unchanged(self, polls: Sequence[Unchanged], now: datetime) -> None:
        """Successful polls that brought nothing new, in one transaction and one statement
        run for each (a quiet cycle over a thousand sources is one write, not a thousand)."""
        if not polls:
            return
        table = Source.__table__
        statement = update(table).where(table.c.id == bindparam("source_id")).values(
            last_polled_at=now, last_success_at=now, last_error=None, consecutive_failures=0,
            failing_since=None, last_status=bindparam("status"),
            next_poll_at=bindparam("next_poll_at", type_=table.c.next_poll_at.type),
            etag=bindparam("etag"), last_modified=bindparam("last_modified"),
            current_interval_seconds=func.coalesce(bindparam("interval", type_=Integer),
                                                   table.c.current_interval_seconds),
            **self._unleased(table.c))
        with self.engine.begin() as connection:
            connection.execute(statement, [
                dict(source_id=p.source_id, status=p.status, next_poll_at=p.next_poll_at,
                     etag=p.etag, last_modified=p.last_modified,
                     interval=None if p.interval is None else int(p.interval.total_seconds()))
                for p in polls])

    def take_notice(self, source_id: int, kind: str, now: datetime) -> bool:
        """Claim the right to tell the operator that a source is failing (or disabled), or
        that it has recovered: true for exactly one caller per failure streak, across
        instances. `give_back_notice` undoes it when the message could not be sent."""
        if kind == "recovered":
            condition, value = Source.failure_noticed_at.is_not(None), None
        elif kind == "disabled":  # once per disabling, even after a "failing" notice
            condition, value = Source.disabled_at.is_not(None), now
        else:
            condition, value = Source.failure_noticed_at.is_(None), now
        with Session(self.engine) as session, session.begin():
            result = session.execute(update(Source).where(Source.id == source_id, condition)
                                     .values(failure_noticed_at=value))
            return result.rowcount == 1  # type: ignore[attr-defined]

    def give_back_notice(self, source_id: int, kind: str, noticed_at: datetime | None) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(update(Source).where(Source.id == source_id).values(
                failure_noticed_at=noticed_at if kind == "recovered" else None))

    def enable_source(self, url: str, now: datetime) -> bool:
        """Poll a disabled source again, now, with its failure record cleared."""
        with Session(self.engine) as session, session.begin():
            result = session.execute(update(Source).where(Source.url == url).values(
                disabled_at=None, disabled_reason=None, consecutive_failures=0,
                failing_since=None, failure_noticed_at=None, next_poll_at=now))
            return result.rowcount == 1  # type: ignore[attr-defined]

    def source_overview(self) -> list[tuple[SourceState, int]]:
        """Every source feeds.yaml names (disabled ones too) with how many items it has
        brought."""
        with Session(self.engine) as session:
            counts = dict(session.execute(select(Item.source_id, func.count())
                                          .group_by(Item.source_id)).all())
            return [(_state(s), counts.get(s.id, 0)) for s in session.scalars(
                select(Source).where(Source.active.is_(True)).order_by(Source.id))]

    # Items ---------------------------------------------------------------------------------

    def known_items(self, source_id: int,
                    items: Sequence[NormalizedItem]) -> dict[str, Known]:
        """The stored item each of these is, by any of its keys, keyed by the new identity."""
        by_key: dict[str, list[str]] = {}
        for item in items:
            for key in item.keys:
                by_key.setdefault(_sha(key), []).append(item.identity)
        hashes = list(by_key)
        found: dict[str, Known] = {}
        with Session(self.reader) as session:
            for chunk in _chunks(hashes):
                rows = session.execute(
                    select(ItemKey.key_hash, Item.id, Item.content_hash, Item.matched_rules)
                    .join(Item, Item.id == ItemKey.item_id)
                    .where(ItemKey.source_id == source_id, ItemKey.key_hash.in_(chunk)))
                for key_hash, item_id, content_hash, matched in rows:
                    known = Known(item_id, content_hash,
                                  None if matched is None else tuple(matched))
                    for identity in by_key[key_hash]:
                        found.setdefault(identity, known)
        return found

    def save_poll(self, source: SourceState, *, new: Sequence[Outgoing],
                  changed: Sequence[Outgoing], status: int, etag: str | None,
                  last_modified: str | None, feed_title: str | None, now: datetime,
                  next_poll_at: datetime, body_hash: str | None = None,
                  item_count: int | None = None, interval: timedelta | None = None,
                  ttl_seconds: int | None = None) -> SaveOutcome:
        """Record a successful poll in one transaction: new items, edited items, their alerts
        and the source's state. An item another writer recorded first raises no alert here.
        New items are written a poll at a time (a few statements, not a few per item); their
        stories are chosen first, each item seeing the ones before it."""
        inserted = updated = alerts = 0
        # The index lock, then the database's: this process's writers take turns at the
        # index, which learns what a transaction wrote only once it has committed.
        with self.story_index.lock:
            if new and not self.story_index.loaded:
                with self.reader.connect() as connection:  # the window, before the lock
                    self.story_index.load(connection, now)
            with self.engine.begin() as connection:
                if self.dialect == "postgresql":
                    # Story assignment reads then writes: one writer at a time, as SQLite's
                    # BEGIN IMMEDIATE already ensures.
                    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                       {"k": STORY_LOCK})
                batch = None
                if new:
                    self.story_index.catch_up(connection, now)
                    batch = self.story_index.batch(connection)
                    story_ids, provisional, started = self._stories_for(connection, batch, source,
                                                                        new, now)
                    item_ids = self._insert_items(connection, source, new, story_ids, now)
                    inserted = len(item_ids)
                    for position, out in enumerate(new):
                        item_id = item_ids.get(position)
                        if item_id is not None and out.alerts:
                            alerts += self._enqueue(connection, story_ids[position], item_id,
                                                    out.alerts, now)
                for out in changed:
                    story_id = connection.execute(select(Item.story_id).where(
                        Item.id == out.item_id)).scalar()
                    if story_id is None:
                        continue
                    connection.execute(update(Item).where(Item.id == out.item_id).values(
                        **self._item_values(out), updated_at=now))
                    self._remember(connection, source.id, [(out.item_id, out)])
                    updated += 1
                    alerts += self._enqueue(connection, story_id, out.item_id, out.alerts, now)
                values: dict[str, Any] = dict(
                    last_polled_at=now, last_success_at=now, last_status=status, last_error=None,
                    consecutive_failures=0, next_poll_at=next_poll_at, etag=etag,
                    last_modified=last_modified, failing_since=None, body_hash=body_hash,
                    last_item_count=item_count, ttl_seconds=ttl_seconds, **self._unleased())
                if interval is not None:
                    values["current_interval_seconds"] = int(interval.total_seconds())
                if feed_title:
                    values["feed_title"] = feed_title[:300]
                if source.first_polled_at is None:
                    values["first_polled_at"] = now
                connection.execute(update(Source).where(Source.id == source.id).values(**values))
            if batch is not None:  # committed: now the index may hold these items
                batch.commit({p: item_ids[n] for n, p in enumerate(provisional)
                              if p is not None and n in item_ids}, started)
        return SaveOutcome(new=inserted, updated=updated, alerts=alerts)

    @staticmethod
    def _item_values(out: Outgoing) -> dict[str, Any]:
        item = out.item
        values = dict(guid=item.guid, url=item.url, canonical_url=item.canonical_url,
                      link_hash=link_hash(item), publisher=item.publisher,
                      title=item.title, summary=item.summary, content=item.content,
                      author=item.author, language=item.language,
                      published_at=item.published_at, content_hash=item.content_hash,
                      matched_rules=None if out.matched_rules is None
                      else list(out.matched_rules))
        if out.fingerprint is not None:
            values.update(fingerprint=out.fingerprint.signature,
                          story_text=out.fingerprint.text)
        return values

    def _stories_for(self, connection: Connection, batch: Batch, source: SourceState,
                     new: Sequence[Outgoing], now: datetime
                     ) -> tuple[list[int], list[int | None], dict[int, int]]:
        """The story of each new item (`_story_for`); the provisional id under which the
        batch knows each fingerprinted item; and the stories the items start, inserted
        together, as provisional (negative) id -> real id."""
        digests = [link_hash(out.item) for out in new]
        linked = self._linked_stories(connection, {d for d in digests if d})
        started: dict[int, str] = {}  # provisional story id -> key
        chosen, provisional = [], []
        for out, digest in zip(new, digests):
            story_id = self._story_for(batch, source, out, now, digest, linked, started)
            chosen.append(story_id)
            provisional.append(None if out.fingerprint is None else batch.add(
                story_id, now, source.id, out.item.publisher or "", out.fingerprint))
        real = self._insert_stories(connection, started, now)
        return [real.get(s, s) for s in chosen], provisional, real

    def _linked_stories(self, connection: Connection, digests: set[str]) -> dict[str, int]:
        """The stories already holding these canonical links (at any age)."""
        found: dict[str, int] = {}
        for chunk in _chunks(sorted(digests)):
            found.update(connection.execute(
                select(Item.link_hash, func.min(Item.story_id))
                .where(Item.link_hash.in_(chunk)).group_by(Item.link_hash)).all())
        return found

    def _story_for(self, batch: Batch, source: SourceState, out: Outgoing, now: datetime,
                   digest: str | None, linked: dict[str, int], started: dict[int, str]) -> int:
        """The story a new item belongs to: the one already holding its canonical link, else
        the one its recent look-alikes belong to (as `monitor.stories` judges), else a new
        story (a provisional negative id until it is inserted)."""
        if digest is not None and digest in linked:
            return linked[digest]
        if out.fingerprint is not None:
            # The index's candidates share enough words with the item: see `Batch.candidates`.
            match = stories.best_match(out.fingerprint,
                                       self._story_candidates(batch, source, out, now),
                                       sharing_checked=True)
            if match is not None:
                out.fingerprint.weak = match.weak  # kept with the item's signature
                if digest is not None:
                    linked.setdefault(digest, match.story_id)
                return match.story_id
        key = _sha(f"url:{out.item.canonical_url}" if digest else
                   f"item:{source.id}:{out.item.identity}")
        story_id = -1 - len(started)
        started[story_id] = key
        if digest is not None:
            linked[digest] = story_id
        return story_id

    def _story_candidates(self, batch: Batch, source: SourceState, out: Outgoing,
                          now: datetime) -> list[stories.Candidate]:
        """Recent items sharing words with the new one (`StoryIndex`), as `best_match`
        compares them."""
        assert out.fingerprint is not None
        publisher = out.item.publisher or ""
        return [stories.Candidate(entry.story_id, print_, now - entry.first_seen_at,
                                  same_outlet=entry.source_id == source.id
                                  and entry.publisher == publisher)
                for _, entry, print_ in batch.candidates(out.fingerprint, now)]

    def _insert_stories(self, connection: Connection, keys: dict[int, str],
                        now: datetime) -> dict[int, int]:
        """Insert the stories new items start; provisional id -> real id."""
        if not keys:
            return {}
        connection.execute(self._insert(Story).on_conflict_do_nothing(index_elements=["key"]),
                           [{"key": key, "created_at": now} for key in keys.values()])
        ids: dict[str, int] = {}
        for chunk in _chunks(sorted(set(keys.values()))):
            ids.update(connection.execute(select(Story.key, Story.id).where(
                Story.key.in_(chunk))).all())
        return {provisional: ids[key] for provisional, key in keys.items()}

    def _insert_items(self, connection: Connection, source: SourceState,
                      new: Sequence[Outgoing], story_ids: list[int],
                      now: datetime) -> dict[int, int]:
        """Insert new items and their keys; position in `new` -> item id, for those that
        were not already there (another writer got there first)."""
        rows = [dict(self._item_values(out), source_id=source.id, identity=out.item.identity,
                     story_id=story_id, first_seen_at=now, updated_at=now)
                for out, story_id in zip(new, story_ids)]
        defaults = {"fingerprint": None, "story_text": None}
        rows = [defaults | row for row in rows]  # executemany: one set of columns
        by_identity = dict(connection.execute(
            self._insert(Item).on_conflict_do_nothing(index_elements=["source_id", "identity"])
            .returning(Item.identity, Item.id), rows).all())
        position = {out.item.identity: n for n, out in enumerate(new)}
        assert len(position) == len(new), "a poll's new items have one identity each"
        ids = {position[identity]: item_id for identity, item_id in by_identity.items()}
        self._remember(connection, source.id, [(ids[n], out) for n, out in enumerate(new)
                                               if n in ids])
        return ids

    def _remember(self, connection: Connection, source_id: int,
                  items: Sequence[tuple[int, Outgoing]]) -> None:
        """Record the items' keys, for recognising them when they come back."""
        keys = [{"source_id": source_id, "key_hash": _sha(k), "item_id": item_id}
                for item_id, out in items for k in out.item.keys]
        if keys:
            connection.execute(self._insert(ItemKey).on_conflict_do_nothing(
                index_elements=["source_id", "key_hash"]), keys)

    def _enqueue(self, connection: Connection, story_id: int, item_id: int,
                 alerts: dict[str, Planned], now: datetime) -> int:
        """One alert per (story, destination). For a destination that threads, a later copy
        of a story whose alert is already out becomes a reply under it."""
        count = 0
        for destination, plan in alerts.items():
            values = dict(story_id=story_id, item_id=item_id, destination=destination,
                          rules=plan.rules, status="pending", attempts=0, created_at=now,
                          next_attempt_at=plan.not_before or now, urgent=plan.urgent)
            alert_id = connection.execute(
                self._insert(Alert).values(**values)
                .on_conflict_do_nothing(index_elements=["story_id", "destination"],
                                        index_where=Alert.parent_id.is_(None))
                .returning(Alert.id)).scalar()
            if alert_id is not None:
                count += 1
                continue
            if not plan.threads:
                continue
            parent = connection.execute(select(Alert.id, Alert.status, Alert.item_id).where(
                Alert.story_id == story_id, Alert.destination == destination,
                Alert.parent_id.is_(None))).one_or_none()
            # Still waiting to go: the first alert will name this copy under "Also reported by".
            if parent is None or parent.status not in ("sending", "sent") \
                    or parent.item_id == item_id:
                continue
            values.update(parent_id=parent.id, next_attempt_at=now)
            reply_id = connection.execute(
                self._insert(Alert).values(**values)
                .on_conflict_do_nothing(index_elements=["item_id", "destination"],
                                        index_where=Alert.parent_id.is_not(None))
                .returning(Alert.id)).scalar()
            count += reply_id is not None
        return count

    # Alerts --------------------------------------------------------------------------------

    def claim_due_alerts(self, now: datetime, *, lease: timedelta,
                         limit: int = 100) -> list[PendingAlert]:
        """Take up to `limit` due alerts for one delivery pass: `sending` until settled, and
        skipped by every other pass until then or until the lease runs out (the holder
        crashed). A thread reply waits until its story's first alert is settled."""
        parent = aliased(Alert)
        with Session(self.engine) as session, session.begin():
            query = (select(Alert.id)
                     .outerjoin(parent, Alert.parent_id == parent.id)
                     .where(or_(and_(Alert.status.in_(("pending", "failed")),
                                     Alert.next_attempt_at <= now),
                                and_(Alert.status == "sending", Alert.lease_until < now)),
                            or_(Alert.parent_id.is_(None), parent.status.in_(("sent", "dead"))))
                     .order_by(Alert.id).limit(limit))
            if self.dialect == "postgresql":
                query = query.with_for_update(of=Alert, skip_locked=True)
            ids = list(session.scalars(query))
            if not ids:
                return []
            session.execute(update(Alert).where(Alert.id.in_(ids))
                            .values(status="sending", lease_until=now + lease))
            rows = session.execute(
                select(Alert, Item, Source, parent.message_ref)
                .join(Item, Alert.item_id == Item.id)
                .join(Source, Item.source_id == Source.id)
                .outerjoin(parent, Alert.parent_id == parent.id)
                .where(Alert.id.in_(ids)).order_by(Alert.id)).all()
            copies: dict[int, list[tuple[int, str]]] = {}
            for item, source in session.execute(
                    select(Item, Source).join(Source, Item.source_id == Source.id)
                    .where(Item.story_id.in_({alert.story_id for alert, *_ in rows}))
                    .order_by(Item.first_seen_at, Item.id)):
                copies.setdefault(item.story_id, []).append(
                    (item.id, _label(source, item.publisher)))
            return [PendingAlert(
                id=alert.id, destination=alert.destination, rules=list(alert.rules),
                attempts=alert.attempts, created_at=alert.created_at, title=item.title,
                url=item.url, summary=item.summary, content=item.content,
                published_at=item.published_at, first_seen_at=item.first_seen_at,
                source_name=_label(source, item.publisher), urgent=alert.urgent,
                reply_to=parent_ref,
                also=() if alert.parent_id is not None else tuple(dict.fromkeys(
                    label for other_id, label in copies.get(alert.story_id, ())
                    if other_id != item.id and label != _label(source, item.publisher))))
                for alert, item, source, parent_ref in rows]

    def extend_lease(self, alert_ids: Sequence[int], until: datetime) -> None:
        """A pass still working on these alerts keeps them (its heartbeat)."""
        if alert_ids:
            with Session(self.engine) as session, session.begin():
                session.execute(update(Alert).where(Alert.id.in_(list(alert_ids)),
                                                    Alert.status == "sending")
                                .values(lease_until=until))

    def _settle(self, alert_ids: Sequence[int], now: datetime, outcome: str,
                error: str | None, **values: Any) -> None:
        """Record one attempt of the message that carried these alerts."""
        if not alert_ids:
            return
        with Session(self.engine) as session, session.begin():
            ids = list(session.scalars(
                update(Alert).where(Alert.id.in_(list(alert_ids)), Alert.status == "sending")
                .values(attempts=Alert.attempts + 1, lease_until=None, **values)
                .returning(Alert.id)))
            if ids:
                session.execute(self._insert(AlertAttempt).values([
                    {"alert_id": i, "at": now, "outcome": outcome,
                     "error": error[:2000] if error else None, "grouped": len(alert_ids)}
                    for i in ids]))

    def mark_sent(self, alert_ids: Sequence[int], now: datetime, *,
                  ref: str | None = None) -> None:
        self._settle(alert_ids, now, "sent", None, status="sent", sent_at=now,
                     last_error=None, message_ref=ref)

    def mark_failed(self, alert_ids: Sequence[int], error: str, now: datetime,
                    next_attempt_at: datetime) -> None:
        self._settle(alert_ids, now, "failed", error, status="failed",
                     last_error=error[:2000], next_attempt_at=next_attempt_at)

    def mark_dead(self, alert_ids: Sequence[int], error: str, now: datetime) -> None:
        self._settle(alert_ids, now, "dead", error, status="dead", last_error=error[:2000])

    def release(self, alert_ids: Sequence[int], *, until: datetime | None = None) -> None:
        """Give claimed alerts back without counting an attempt, due again at `until` (or as
        they were): the pass stopped before trying them."""
        if not alert_ids:
            return
        values: dict[str, Any] = {"lease_until": None, "status": case(
            (Alert.attempts > 0, "failed"), else_="pending")}
        if until is not None:
            values["next_attempt_at"] = until
        with Session(self.engine) as session, session.begin():
            session.execute(update(Alert).where(Alert.id.in_(list(alert_ids)),
                                                Alert.status == "sending").values(**values))

    def alerts(self, *, status: str | None = None, destination: str | None = None,
               limit: int = 50) -> list[AlertRow]:
        """Alerts newest first, for `monitor alerts`."""
        with Session(self.engine) as session:
            query = (select(Alert, Item, Source).join(Item, Alert.item_id == Item.id)
                     .join(Source, Item.source_id == Source.id)
                     .order_by(Alert.id.desc()).limit(limit))
            if status:
                query = query.where(Alert.status == status)
            if destination:
                query = query.where(Alert.destination == destination)
            return [self._row(*row) for row in session.execute(query)]

    def alert(self, alert_id: int) -> tuple[AlertRow, list[AttemptRow]] | None:
        with Session(self.engine) as session:
            row = session.execute(select(Alert, Item, Source)
                                  .join(Item, Alert.item_id == Item.id)
                                  .join(Source, Item.source_id == Source.id)
                                  .where(Alert.id == alert_id)).one_or_none()
            if row is None:
                return None
            attempts = [AttemptRow(a.at, a.outcome, a.error, a.grouped) for a in session.scalars(
                select(AlertAttempt).where(AlertAttempt.alert_id == alert_id)
                .order_by(AlertAttempt.id))]
            return self._row(*row), attempts

    @staticmethod
    def _row(alert: Alert, item: Item, source: Source) -> AlertRow:
        return AlertRow(alert.id, alert.status, alert.destination, alert.attempts,
                        alert.created_at, alert.next_attempt_at, alert.sent_at,
                        alert.last_error, item.title, item.url, _label(source, item.publisher),
                        list(alert.rules), alert.parent_id is not None)

    def retry_dead(self, alert_ids: Sequence[int] | None, now: datetime) -> list[int]:
        """Give dead alerts (these, or all) a fresh set of attempts, due now. Returns the ids
        that were dead and are pending again."""
        with Session(self.engine) as session, session.begin():
            query = update(Alert).where(Alert.status == "dead")
            if alert_ids is not None:
                query = query.where(Alert.id.in_(list(alert_ids)))
            return sorted(session.scalars(query.values(
                status="pending", attempts=0, next_attempt_at=now, lease_until=None)
                .returning(Alert.id)))

    def recent_stories(self, since: datetime, limit: int = 50) -> list[StoryView]:
        """Stories first seen since `since`, newest first, with every copy and alert state."""
        with Session(self.engine) as session:
            ids = list(session.scalars(select(Story.id).where(Story.created_at >= since)
                                       .order_by(Story.created_at.desc(), Story.id.desc())
                                       .limit(limit)))
            copies: dict[int, list[Copy]] = {i: [] for i in ids}
            for item, source in session.execute(
                    select(Item, Source).join(Source, Item.source_id == Source.id)
                    .where(Item.story_id.in_(ids)).order_by(Item.first_seen_at, Item.id)):
                copies[item.story_id].append(Copy(_label(source, item.publisher), item.title,
                                                  item.url, item.first_seen_at))
            states: dict[int, dict[str, str]] = {i: {} for i in ids}
            for story_id, destination, status in session.execute(
                    select(Alert.story_id, Alert.destination, Alert.status)
                    .where(Alert.story_id.in_(ids))):
                states[story_id][destination] = status
            created = dict(session.execute(select(Story.id, Story.created_at)
                                           .where(Story.id.in_(ids))).all())
            return [StoryView(i, created[i], tuple(copies[i]), states[i]) for i in ids]

    def items_since(self, since: datetime) -> Iterator[tuple[Item, Source]]:
        """Stored items first seen since `since`, oldest first, with their source."""
        with Session(self.engine) as session:
            query = (select(Item, Source).join(Source, Item.source_id == Source.id)
                     .where(Item.first_seen_at >= since).order_by(Item.first_seen_at, Item.id)
                     .execution_options(yield_per=500))
            for item, source in session.execute(query):
                yield item, source

    def alert_counts(self) -> dict[str, int]:
        with Session(self.engine) as session:
            return dict(session.execute(select(Alert.status, func.count()).group_by(
                Alert.status)).all())
