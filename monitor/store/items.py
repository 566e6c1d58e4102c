"""Items and stories in the store: which fetched items are already known, a poll's new and
edited items recorded with their stories and alerts (`save_poll`), and stories and items read
back. Judging look-alikes is `monitor.stories`, the story window storyindex.py; delivering the
alerts is alerts.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.orm import Session

from monitor import stories
from monitor.normalize import Item as NormalizedItem
from monitor.stories import Fingerprint
from monitor.store.base import STORY_LOCK, StoreBase, _label
from monitor.store.models import Alert, Item, ItemKey, Source, Story
from monitor.store.sources import SourceState
from monitor.store.storyindex import Batch


@dataclass(frozen=True)
class Known:
    item_id: int
    content_hash: str
    matched_rules: tuple[str, ...] | None  # None: recorded quietly, never evaluated


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


class ItemsMixin(StoreBase):
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
