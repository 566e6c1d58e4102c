"""The story of a poll: fetch → parse → normalize → store (new only) → match → enqueue.

`poll_source` reads top to bottom as that story. Deciding "is it new?" belongs to the store
(unique keys); deciding "does it matter?" belongs to the matcher; this module only sequences them
and decides what a source's next poll is. Alerts are written in the same transaction as the
items that raise them (`Store.save_poll`), so a crash can lose neither.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.destinations import Destination
from monitor.errors import FetchError, TransientFetchError
from monitor.fetch import Fetcher
from monitor.logs import log
from monitor.engine import Engine
from monitor.match import RuleMatch
from monitor.normalize import Item, normalize_entry, without_keys
from monitor.parse import parse_feed
from monitor.rules import Rule, RuleSet
from monitor.settings import Settings
from monitor.store import Outgoing, Planned, SourceState, Store
from monitor.stories import fingerprint

MAX_BACKOFF = timedelta(hours=6)
# A published date this far in the future is not believed on a first poll.
CLOCK_SKEW = timedelta(hours=1)


@dataclass(frozen=True)
class Routing:
    """Which destinations each rule's alerts go to, and when they may be sent."""

    default: tuple[str, ...]
    destinations_by_name: Mapping[str, Destination]

    def destinations(self, rule: Rule) -> tuple[str, ...]:
        wanted = rule.notify or self.default
        usable = tuple(d for d in wanted if d in self.destinations_by_name)
        # Rules are checked against the configured destinations when loaded; should one go
        # away under a running daemon, its alerts still reach someone.
        return usable or ("console",)

    def plan(self, destination: str, rules: list[dict[str, Any]], urgent: bool,
             now: datetime) -> Planned:
        found = self.destinations_by_name.get(destination)
        if found is None:
            return Planned(rules, urgent=urgent)
        release = found.schedule.release_at(now, urgent=urgent)
        return Planned(rules, not_before=release if release > now else None, urgent=urgent,
                       threads=found.threads)


@dataclass(frozen=True)
class PollReport:
    source: str
    status: int | None
    new: int = 0
    updated: int = 0
    alerts: int = 0
    error: str | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def next_poll(interval: timedelta, now: datetime) -> datetime:
    # Up to 5% of jitter so that sources added together drift apart.
    return now + interval + timedelta(seconds=random.uniform(0, interval.total_seconds() * 0.05))


def failure_backoff(source: SourceState, error: FetchError, now: datetime) -> datetime:
    delay = min(source.interval * (2 ** min(source.consecutive_failures, 10)), MAX_BACKOFF)
    if isinstance(error, TransientFetchError) and error.retry_after:
        delay = max(delay, timedelta(seconds=min(error.retry_after, MAX_BACKOFF.total_seconds())))
    return next_poll(delay, now)


def alerts_for(matches: Sequence[RuleMatch], rules: dict[str, Rule],
               routing: Routing, now: datetime) -> dict[str, Planned]:
    """One alert per destination, naming every rule that routes there and its terms; urgent
    when one of those rules is."""
    by_destination: dict[str, list[dict[str, Any]]] = {}
    urgent: dict[str, bool] = {}
    for m in matches:
        payload = {"id": m.rule_id, "name": m.rule_name, "terms": list(m.terms)}
        rule = rules[m.rule_id]
        for destination in routing.destinations(rule):
            by_destination.setdefault(destination, []).append(payload)
            urgent[destination] = urgent.get(destination, False) or rule.urgent
    return {d: routing.plan(d, payloads, urgent[d], now)
            for d, payloads in by_destination.items()}


@dataclass(frozen=True)
class Compiled:
    """A rule set ready to match: swapped into a running poller as one value."""

    ruleset: RuleSet
    engine: Engine
    rules_by_id: dict[str, Rule]
    tags: dict[str, tuple[str, ...]]  # feed URL -> its tags from feeds.yaml


def compile_ruleset(ruleset: RuleSet) -> Compiled:
    """CPU work (the automaton): run it off the event loop."""
    return Compiled(ruleset, Engine(ruleset.rules), {r.id: r for r in ruleset.rules},
                    {feed.url: tuple(feed.tags) for feed in ruleset.feeds})


class Poller:
    def __init__(self, settings: Settings, store: Store, fetcher: Fetcher,
                 compiled: Compiled, routing: Routing):
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.routing = routing
        self.compiled = compiled
        self._fetch_slots = asyncio.Semaphore(settings.fetch_concurrency)

    def use(self, compiled: Compiled) -> None:
        """Match with new rules from now on; a poll under way finishes with the old ones."""
        self.compiled = compiled

    async def poll(self, sources: Sequence[SourceState]) -> list[PollReport]:
        return list(await asyncio.gather(*(self.poll_source(s) for s in sources)))

    async def poll_source(self, source: SourceState) -> PollReport:
        """Poll one source. Whatever goes wrong is recorded against this source and backed
        off; it never reaches the other sources."""
        now = utcnow()
        try:
            return await self._poll(source, now)
        except FetchError as exc:
            failure = exc
            log.warning("feed failed", url=source.url, status=exc.status, error=exc.reason,
                        failures=source.consecutive_failures + 1)
        except Exception as exc:
            failure = FetchError(source.url, f"unexpected {type(exc).__name__}: {exc}"[:500])
            log.exception("feed failed", url=source.url, error=failure.reason,
                          failures=source.consecutive_failures + 1)
        try:
            await asyncio.to_thread(
                self.store.record_failure, source.id, status=failure.status,
                error=failure.reason, now=now,
                next_poll_at=failure_backoff(source, failure, now))
        except Exception:
            log.exception("cannot record a feed failure", url=source.url)
        return PollReport(source.label, failure.status, error=failure.reason)

    async def _poll(self, source: SourceState, now: datetime) -> PollReport:
        async with self._fetch_slots:
            fetched = await self.fetcher.fetch(source.url, etag=source.etag,
                                               last_modified=source.last_modified)
        if fetched.not_modified:
            await asyncio.to_thread(self.store.record_not_modified, source.id, now=now,
                                    next_poll_at=next_poll(source.interval, now))
            log.info("feed fetched", url=source.url, status=304, new=0, ms=fetched.elapsed_ms)
            return PollReport(source.label, 304)
        assert fetched.body is not None
        # Parsed against the feed's URL before redirects (the configured one, or the feed its
        # page links to): a redirect must not change how relative GUIDs resolve, or every
        # item would look new.
        feed = await asyncio.to_thread(parse_feed, fetched.body,
                                       url=fetched.feed_url or source.url,
                                       content_type=fetched.content_type)
        items = self._unique([normalize_entry(e, feed_language=feed.language)
                              for e in feed.entries])
        known = await asyncio.to_thread(self.store.known_items, source.id, items)
        new, changed = self._triage(source, items, known, now)
        outcome = await asyncio.to_thread(
            self.store.save_poll, source, new=new, changed=changed, status=fetched.status,
            etag=fetched.etag, last_modified=fetched.last_modified, feed_title=feed.title,
            now=now, next_poll_at=next_poll(source.interval, now))
        log.info("feed fetched", url=source.url, status=fetched.status, items=len(items),
                 new=outcome.new, updated=outcome.updated, alerts=outcome.alerts,
                 ms=fetched.elapsed_ms, **({"problem": feed.problem} if feed.problem else {}))
        return PollReport(source.label, fetched.status, new=outcome.new,
                          updated=outcome.updated, alerts=outcome.alerts)

    @staticmethod
    def _unique(items: list[Item]) -> list[Item]:
        """A link that several different items of the feed share (a section page, say) names
        none of them; then a feed that lists one item twice (under any of its keys): keep the
        first."""
        owners: dict[str, set[str]] = {}
        for item in items:
            for key in item.keys:
                if key.startswith(("url:", "path:")):
                    owners.setdefault(key, set()).add(item.guid or item.title)
        shared = {key for key, who in owners.items() if len(who) > 1}
        if shared:
            items = [without_keys(item, shared) for item in items]
        seen: set[str] = set()
        unique = []
        for item in items:
            if not seen.intersection(item.keys):
                unique.append(item)
            seen.update(item.keys)
        return unique

    def _triage(self, source: SourceState, items: list[Item], known: dict[str, Any],
                now: datetime) -> tuple[list[Outgoing], list[Outgoing]]:
        """New items are matched (or recorded quietly on a first poll when older than the
        look-back) and fingerprinted for story grouping; an edited item is matched again
        only if it had been evaluated and had matched nothing — an item never alerts twice
        because its text changed."""
        first_poll = source.first_polled_at is None
        cutoff = now - self.settings.first_poll_lookback
        new: list[Outgoing] = []
        changed: list[Outgoing] = []
        for item in items:
            previous = known.get(item.identity)
            if previous is None:
                recent = item.published_at is not None and \
                    cutoff <= item.published_at <= now + CLOCK_SKEW
                print_ = fingerprint(item.title, item.summary or item.content, item.publisher)
                if first_poll and not recent:
                    new.append(Outgoing(item, None, {}, fingerprint=print_))
                else:
                    new.append(replace(self._evaluate(item, source, now), fingerprint=print_))
            elif previous.content_hash != item.content_hash:
                if previous.matched_rules == ():
                    changed.append(replace(self._evaluate(item, source, now),
                                           item_id=previous.item_id))
                else:
                    changed.append(Outgoing(item, previous.matched_rules, {},
                                            item_id=previous.item_id))
        return new, changed

    def _evaluate(self, item: Item, source: SourceState, now: datetime) -> Outgoing:
        compiled = self.compiled
        document = item.document(source=source.label, feed=source.url,
                                 tags=compiled.tags.get(source.url, ()))
        matches = compiled.engine.match(document)
        return Outgoing(item, tuple(m.rule_id for m in matches),
                        alerts_for(matches, compiled.rules_by_id, self.routing, now))
