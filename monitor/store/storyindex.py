"""Which recent items a new one may share a story with: an index, in memory, of the items of
the story window (`stories.WINDOW`) by the words their stories are found by.

The database stays the truth. Every stored item's fingerprint carries its words
(`Fingerprint.key_hashes`), so the index is filled from the items table when first needed and
brought up to date inside each story transaction with what other writers (other instances,
`monitor run --once`) stored since. Items are written under the story lock (SQLite's write
lock, a PostgreSQL advisory lock), so their ids grow in commit order and one watermark says
what this process has not seen yet.

Each word counts only its `POSTINGS_PER_KEY` most recent items (its list is trimmed when it
reaches twice that), so a common word costs no more than a rare one; a candidate must share
`MIN_SHARED_KEYS` words with the new item, and the `CANDIDATES` sharing most are compared.
Every word of an item is indexed (`key_hashes`, all of them, as `best_match` counts them).
Items older than the window are dropped as it moves.
Of each item the index keeps what picking candidates needs (its story, arrival, feed and
publisher, some 150 bytes); fingerprints, ten times that, are kept for the `DECODED` most
recently used items only, and a candidate's that is not among them is read from the items
table (in one query for all of an item's candidates). Candidates are mostly recent items, so
that is rare: about one candidate in a hundred in `bench/poll.py`'s full cycle (one in six
hundred when twice as many are kept, for some 11 MB more).

What lives elsewhere: similarity and vetoes (`monitor.stories`), and writing items
(`Store.save_poll`, which uses a `Batch` so that items of one poll see each other before they
are committed, and commits the batch here only once the transaction has).
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Connection, bindparam, func, select

from monitor import stories
from monitor.stories import Fingerprint
from monitor.store.models import Item

ID = "q"  # an item id in the index's arrays: 64-bit
PRUNE_EVERY = timedelta(minutes=10)  # how often entries that left the window are dropped
DECODED = 4096  # fingerprints kept decoded, the most recently used
# Built once: building a statement costs three times what running this one does.
_BY_IDS = (select(Item.id, Item.fingerprint, Item.story_text)
           .where(Item.id.in_(bindparam("ids", expanding=True))))


@dataclass(frozen=True, slots=True)
class Entry:
    """A recent item as choosing candidates needs it (its fingerprint is kept apart)."""

    story_id: int
    first_seen_at: datetime
    source_id: int
    publisher: str


class StoryIndex:
    def __init__(self) -> None:
        self._entries: dict[int, Entry] = {}
        # Item ids by word, oldest first, as machine integers: an item's candidates are the
        # words' recent ids joined as bytes and counted by numpy.
        self._postings: dict[int, array[int]] = {}
        self._decoded: OrderedDict[int, Fingerprint] = OrderedDict()
        self._publishers: dict[str, str] = {}
        self._watermark: int | None = None  # the highest item id read; None: nothing loaded
        self._pruned_at: datetime | None = None
        self._oldest: datetime | None = None  # the earliest arrival among the entries
        self.lock = threading.Lock()  # held by a writer from its transaction to `commit`

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def loaded(self) -> bool:
        return self._watermark is not None

    def load(self, connection: Connection, now: datetime) -> None:
        """Fill the index with the story window as stored: done once, outside the story
        transaction (it reads the whole window, and writers should not wait for that); what
        is stored meanwhile is read by `catch_up`."""
        newest = connection.execute(select(func.max(Item.id))).scalar() or 0
        self._read(connection, Item.id <= newest, now)
        self._watermark = newest  # only once all of it is read: a failed load is retried

    def catch_up(self, connection: Connection, now: datetime) -> None:
        """Read what other writers stored since this process last looked. Call inside the
        story transaction, before looking anything up. The transaction must read committed
        data as of the lock (SQLite's write lock; PostgreSQL at READ COMMITTED, which the
        store's engine sets), or a writer's items could be missed for good."""
        if self._watermark is None:
            self.load(connection, now)
            return
        newest = connection.execute(select(func.max(Item.id))).scalar() or 0
        if newest > self._watermark:
            self._read(connection, Item.id > self._watermark, now)
            self._watermark = newest
        since = now - stories.WINDOW
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            self._prune(since)
            self._pruned_at = now

    def _read(self, connection: Connection, which: Any, now: datetime) -> None:
        since = now - stories.WINDOW
        rows = connection.execute(
            select(Item.id, Item.story_id, Item.first_seen_at, Item.source_id, Item.publisher,
                   Item.fingerprint, Item.story_text)
            .where(which, Item.first_seen_at >= since, Item.fingerprint.is_not(None))
            .order_by(Item.id).execution_options(yield_per=2000))
        for row in rows:
            stored = Fingerprint.stored(row.story_text or "", row.fingerprint)
            if stored is not None:
                publisher = row.publisher or ""  # one string per publisher, not per item
                self._add(row.id, Entry(row.story_id, row.first_seen_at, row.source_id,
                                        self._publishers.setdefault(publisher, publisher)),
                          stored)

    def batch(self, connection: Connection) -> Batch:
        """The index as a transaction on `connection` sees it (see `Batch`)."""
        return Batch(self, connection)

    def fingerprints(self, connection: Connection, ids: list[int]) -> dict[int, Fingerprint]:
        """The fingerprints of these indexed items: those kept decoded, and the rest read
        from the database (an item deleted meanwhile is left out)."""
        found: dict[int, Fingerprint] = {}
        missing = []
        kept, used = self._decoded, self._decoded.move_to_end
        for item_id in ids:
            decoded = kept.get(item_id)
            if decoded is None:
                missing.append(item_id)
            else:
                used(item_id)
                found[item_id] = decoded
        if missing:
            rows = connection.execute(_BY_IDS, {"ids": missing})
            for item_id, signature, text in rows:
                decoded = Fingerprint.stored(text or "", signature) if signature else None
                if decoded is not None:
                    found[item_id] = decoded
                    self._remember(item_id, decoded)
        return found

    def _remember(self, item_id: int, decoded: Fingerprint) -> None:
        self._decoded[item_id] = decoded
        if len(self._decoded) > DECODED:
            self._decoded.popitem(last=False)

    def _add(self, item_id: int, entry: Entry, decoded: Fingerprint) -> None:
        if item_id in self._entries:
            return
        self._entries[item_id] = entry
        if self._oldest is None or entry.first_seen_at < self._oldest:
            self._oldest = entry.first_seen_at
        self._remember(item_id, decoded)
        cap = stories.POSTINGS_PER_KEY
        for key in decoded.key_hashes.tolist():
            posting = self._postings.get(key)
            if posting is None:
                self._postings[key] = array(ID, (item_id,))
                continue
            posting.append(item_id)
            if len(posting) >= 2 * cap:  # trimmed now and then, not at every append
                del posting[:-cap]

    def _prune(self, since: datetime) -> None:
        gone = {i for i, e in self._entries.items() if e.first_seen_at < since}
        if not gone:
            return
        for item_id in gone:
            del self._entries[item_id]
            self._decoded.pop(item_id, None)
        self._oldest = min((e.first_seen_at for e in self._entries.values()), default=None)
        for key in list(self._postings):
            kept = array(ID, (i for i in self._postings[key] if i not in gone))
            if kept:
                self._postings[key] = kept
            else:
                del self._postings[key]


class Batch:
    """The index as one transaction sees it: what is committed, and the items this
    transaction has chosen stories for so far (under ids and story ids of its own until the
    rows exist). `commit` adds them to the index once the transaction has committed."""

    def __init__(self, index: StoryIndex, connection: Connection):
        self.index = index
        self.connection = connection  # where fingerprints not kept decoded are read
        self._pending: dict[int, tuple[Entry, Fingerprint]] = {}  # by provisional item id
        self._postings: dict[int, array[int]] = {}
        # Provisional ids come after every committed one, as the real ones will.
        self._next = (index._watermark or 0) + 1

    def add(self, story_id: int, first_seen_at: datetime, source_id: int, publisher: str,
            print_: Fingerprint) -> int:
        """An item of this transaction; returns the provisional id it is known by."""
        item_id, self._next = self._next, self._next + 1
        entry = Entry(story_id, first_seen_at, source_id, publisher)
        self._pending[item_id] = (entry, print_)
        for key in print_.key_hashes.tolist():
            self._postings.setdefault(key, array(ID)).append(item_id)
        return item_id

    def _entry(self, item_id: int) -> Entry:
        pending = self._pending.get(item_id)
        return pending[0] if pending is not None else self.index._entries[item_id]

    def candidates(self, print_: Fingerprint,
                   now: datetime) -> Iterator[tuple[int, Entry, Fingerprint]]:
        """Items of the window sharing at least `MIN_SHARED_KEYS` words with `print_`, those
        sharing most first (the most recent among equals), at most `CANDIDATES`, returned in
        arrival order."""
        cap = stories.POSTINGS_PER_KEY
        committed, pending = self.index._postings, self._postings
        empty = array(ID)

        # Each word's most recent ids: committed ones, then this transaction's.
        ids = np.frombuffer(b"".join([
            committed.get(key, empty)[-cap:] if (mine := pending.get(key)) is None
            else (committed.get(key, empty) + mine)[-cap:]
            for key in print_.key_hashes.tolist()]), dtype=np.int64)
        if not len(ids):
            return
        # Sorted, each id's occurrences are together: their number is the words it shares.
        # numpy's default sort (vectorised, with AVX2 or AVX-512) beats a merging one even on
        # these sorted runs.
        ids = np.sort(ids)
        starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
        shared = np.diff(np.append(starts, len(ids)))
        enough = shared >= stories.MIN_SHARED_KEYS
        found, shared = ids[starts[enough]], shared[enough]
        since = now - stories.WINDOW
        # Most shared words first, the most recent first among equals.
        ordered = found[np.lexsort((-found, -shared))].tolist()
        oldest = self.index._oldest
        if oldest is None or oldest >= since:  # all in the window (this batch's are `now`)
            chosen = ordered[:stories.CANDIDATES]
        else:
            chosen = []
            for item_id in ordered:
                if self._entry(item_id).first_seen_at >= since:
                    chosen.append(item_id)
                    if len(chosen) == stories.CANDIDATES:
                        break
        waiting = self._pending
        stored = self.index.fingerprints(self.connection,
                                         [i for i in chosen if i not in waiting])
        entries = self.index._entries
        for item_id in sorted(chosen):
            held = waiting.get(item_id)
            if held is not None:
                yield item_id, *held
            elif (other := stored.get(item_id)) is not None:
                yield item_id, entries[item_id], other

    def commit(self, ids: dict[int, int], story_ids: dict[int, int]) -> None:
        """The transaction has committed: provisional item ids became `ids` (those missing
        were not inserted) and provisional story ids `story_ids`."""
        index = self.index
        for provisional, (entry, print_) in self._pending.items():
            item_id = ids.get(provisional)
            if item_id is None:
                continue
            index._add(item_id, Entry(story_ids.get(entry.story_id, entry.story_id),
                                      entry.first_seen_at, entry.source_id, entry.publisher),
                       print_)
            index._watermark = max(index._watermark or 0, item_id)
