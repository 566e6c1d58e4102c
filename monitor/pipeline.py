"""The story of a poll: fetch → parse → normalize → store (new only) → match → enqueue.

`poll_source` reads top to bottom as that story. Deciding "is it new?" belongs to the store
(unique keys); deciding "does it matter?" belongs to the matcher; this module only sequences them
and decides what a source's next poll is. Alerts are written in the same transaction as the
items that raise them (`Store.save_poll`), so a crash can lose neither.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from monitor.destinations import Destination
from monitor.cadence import CLOCK_SKEW, Bounds, Hints, after_content, after_nothing_new, \
    failure_backoff, next_poll
from monitor.errors import FetchError, TransientFetchError
from monitor.fetch import FetchResult
from monitor.logs import log
from monitor.engine import Engine
from monitor.match import RuleMatch
from monitor.normalize import Item
from monitor.rules import Rule, RuleSet
from monitor.settings import Settings
from monitor.store import STORE_ERRORS, Outgoing, Planned, SourceState, Store, Unchanged
from monitor.workers import SEEN, Fetched, FetchRequest, Fetching, Prints, item_print

FLUSH_DELAY = 0.2  # seconds: quiet polls are written together, once this long has passed


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


def parse_processes(settings: Settings) -> int:
    if settings.parse_processes is not None:
        return settings.parse_processes
    return 1 if (os.cpu_count() or 1) > 1 else 0


# Tells the operator about a source: (source, "failing" | "disabled" | "recovered", detail).
Notice = Callable[[SourceState, str, str], Awaitable[None]]


class Poller:
    def __init__(self, settings: Settings, store: Store, fetching: Fetching,
                 compiled: Compiled, routing: Routing, *, notice: Notice | None = None):
        self.settings = settings
        self.store = store
        self.fetching = fetching
        self.routing = routing
        self.compiled = compiled
        self.notice = notice
        self.bounds = Bounds(*settings.poll_bounds)
        # A slot is held from fetch to store, so at most this many bodies are in memory.
        self._slots = asyncio.Semaphore(settings.fetch_concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        # One store write at a time from this process: threads would only queue for
        # SQLite's lock (and time out under load) or for the story lock on PostgreSQL.
        self._writing = asyncio.Lock()
        self._unchanged: list[Unchanged] = []
        self._flushing: asyncio.Task[None] | None = None

    def use(self, compiled: Compiled) -> None:
        """Match with new rules from now on; a poll under way finishes with the old ones."""
        self.compiled = compiled

    async def poll(self, sources: Sequence[SourceState]) -> list[PollReport]:
        reports = list(await asyncio.gather(*(self.poll_source(s) for s in sources)))
        await self.flush()
        return reports

    async def flush(self) -> None:
        """Write the quiet polls noted so far."""
        async with self._writing:
            batch, self._unchanged = self._unchanged, []
            if batch:
                await asyncio.to_thread(self.store.record_unchanged, batch,
                                        self.store.clock())

    async def poll_source(self, source: SourceState) -> PollReport:
        """Poll one source. Whatever goes wrong is recorded against this source and backed
        off; it never reaches the other sources."""
        now = self.store.clock()
        try:
            fetched = await self._fetch(source)
            try:
                return await self._take(source, fetched, now)
            finally:
                self._slots.release()
        except FetchError as exc:
            failure = exc
            log.warning("feed failed", url=source.url, status=exc.status, error=exc.reason,
                        failures=source.consecutive_failures + 1)
        except STORE_ERRORS as exc:
            # The database is unavailable, not the feed's fault: nothing is held against it
            # (no backoff, no "failing" notice). It stays leased until its lease runs out,
            # and is polled again then.
            log.exception("cannot record a poll", url=source.url)
            cause = getattr(exc, "orig", None) or exc  # the driver's words, without the SQL
            return PollReport(source.label, None,
                              error=f"database: {type(exc).__name__}: {cause}"[:500])
        except Exception as exc:
            failure = FetchError(source.url, f"unexpected {type(exc).__name__}: {exc}"[:500])
            log.exception("feed failed", url=source.url, error=failure.reason,
                          failures=source.consecutive_failures + 1)
        await self._failed(source, failure, now)
        return PollReport(source.label, failure.status, error=failure.reason)

    async def _fetch(self, source: SourceState) -> Fetched:
        """Fetch and read within the source's host's limit, then hold one of the global
        slots, which the caller releases once the result is stored. Waiting for a busy host
        holds no global slot, so one slow publisher cannot hold up the others."""
        host = urlsplit(source.url).hostname or ""
        per_host = self._hosts.setdefault(host, asyncio.Semaphore(self.settings.fetch_per_host))
        async with per_host:
            await self._slots.acquire()
            try:
                return await self.fetching.fetch(FetchRequest(
                    source.url, etag=source.etag, last_modified=source.last_modified,
                    body_hash=source.body_hash))
            except BaseException:
                self._slots.release()
                raise

    async def _failed(self, source: SourceState, failure: FetchError, now: datetime) -> None:
        gone = failure.status == 410
        retry_after = failure.retry_after if isinstance(failure, TransientFetchError) else None
        try:
            async with self._writing:
                await asyncio.to_thread(
                    self.store.record_failure, source.id, status=failure.status,
                    error=failure.reason, now=now, disable=gone,
                    next_poll_at=failure_backoff(source.polling_interval,
                                                 source.consecutive_failures + 1, now,
                                                 retry_after))
        except Exception:
            log.exception("cannot record a feed failure", url=source.url)
            return
        if gone:
            log.warning("source disabled: its server says it is gone", url=source.url)
        failing_for = now - (source.failing_since or now)
        if gone or (source.failure_noticed_at is None and
                    failing_for >= self.settings.source_alert_after):
            await self._tell(source, "disabled" if gone else "failing", failure.reason)

    async def _take(self, source: SourceState, fetched: Fetched,
                    now: datetime) -> PollReport:
        """What a fetched feed brings: nothing (304, or the same body again), or items."""
        if fetched.read is None:
            return await self._nothing_new(source, fetched.result, now)
        items, feed = fetched.read.items, fetched.read.feed
        known = await asyncio.to_thread(self.store.known_items, source.id, items)
        new, changed = self._triage(source, items, fetched.prints, known, now)
        if source.pinned:
            interval = source.interval
        elif new:
            interval = after_content(source.polling_interval,
                                     (i.published_at for i in items), now, self.bounds)
        else:  # a changed body with nothing new in it
            interval = after_nothing_new(source.polling_interval, self.bounds)
        ttl = timedelta(minutes=feed.ttl_minutes) if feed.ttl_minutes else None
        result = fetched.result
        hints = Hints(ttl=ttl, max_age=self._max_age(result))
        async with self._writing:
            outcome = await asyncio.to_thread(
                self.store.save_poll, source, new=new, changed=changed, status=result.status,
                etag=result.etag, last_modified=result.last_modified, feed_title=feed.title,
                now=now, next_poll_at=self._next(source, interval, now, hints),
                body_hash=fetched.body_hash, item_count=len(items),
                interval=None if source.pinned else interval,
                ttl_seconds=int(ttl.total_seconds()) if ttl else None)
        log.info("feed fetched", url=source.url, status=result.status, items=len(items),
                 new=outcome.new, updated=outcome.updated, alerts=outcome.alerts,
                 ms=result.elapsed_ms, **({"problem": feed.problem} if feed.problem else {}))
        await self._recovered(source)
        return PollReport(source.label, result.status, new=outcome.new,
                          updated=outcome.updated, alerts=outcome.alerts)

    async def _nothing_new(self, source: SourceState, fetched: FetchResult,
                           now: datetime) -> PollReport:
        """Noted now, written with the other quiet polls of the moment (one transaction)."""
        interval = source.interval if source.pinned else \
            after_nothing_new(source.polling_interval, self.bounds)
        self._unchanged.append(Unchanged(
            source.id, fetched.status, fetched.etag or source.etag,
            fetched.last_modified or source.last_modified,
            self._next(source, interval, now,
                       Hints(ttl=source.ttl, max_age=self._max_age(fetched))),
            None if source.pinned else interval))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_soon())
        log.debug("feed fetched", url=source.url, status=fetched.status, new=0,
                  ms=fetched.elapsed_ms)
        await self._recovered(source)
        return PollReport(source.label, fetched.status)

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        try:
            await self.flush()
        except Exception:
            # The sources stay leased and are polled again when the lease runs out.
            log.exception("cannot record unchanged feeds")

    async def _recovered(self, source: SourceState) -> None:
        if source.failure_noticed_at is not None:
            await self._tell(source, "recovered", f"fetched again after "
                             f"{source.consecutive_failures} failures")

    async def _tell(self, source: SourceState, kind: str, detail: str) -> None:
        """An operator notice; its failure is logged and costs the poll nothing (the notice
        is tried again at the next poll)."""
        if self.notice is None:
            return
        try:
            await self.notice(source, kind, detail)
        except Exception:
            log.exception("cannot tell the operator about a source", url=source.url, kind=kind)

    def _next(self, source: SourceState, interval: timedelta, now: datetime,
              hints: Hints) -> datetime:
        return next_poll(interval, now, hints, cap=max(self.bounds.high, source.interval))

    @staticmethod
    def _max_age(fetched: FetchResult) -> timedelta | None:
        return timedelta(seconds=fetched.max_age) if fetched.max_age else None

    def _triage(self, source: SourceState, items: list[Item],
                prints: Prints, known: dict[str, Any],
                now: datetime) -> tuple[list[Outgoing], list[Outgoing]]:
        """New items are matched (or recorded quietly on a first poll when older than the
        look-back) and carry their story fingerprints (`prints`, made where the feed was
        read; here for the rare new item the reader skipped as seen, see `Reader`); an
        edited item is matched again only if it had been evaluated and had matched nothing —
        an item never alerts twice because its text changed."""
        first_poll = source.first_polled_at is None
        cutoff = now - self.settings.first_poll_lookback
        new: list[Outgoing] = []
        changed: list[Outgoing] = []
        for item, print_ in zip(items, prints, strict=True):
            previous = known.get(item.identity)
            if previous is None:
                if print_ is SEEN:
                    print_ = item_print(item)
                recent = item.published_at is not None and \
                    cutoff <= item.published_at <= now + CLOCK_SKEW
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
