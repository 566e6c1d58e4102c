"""The daemon's lifecycle: start, tick, stop well.

`App.run_once()` is burst mode: poll every source once, deliver what is due, exit.
`App.run_forever()` lets APScheduler drive a poll tick (sources that are due) and a delivery
tick. SIGTERM or SIGINT stops taking new work, lets the ticks in flight finish (up to a grace
period), closes connections and returns.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import replace
from datetime import datetime, timedelta
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.dispatch import DeliveryReport, Dispatcher, record_sent
from monitor.logs import log
from monitor.notify import Notifier, build_notifiers, default_destinations
from monitor.errors import RulesError
from monitor.notify.message import source_notice
from monitor.pipeline import Compiled, Poller, PollReport, Routing, compile_ruleset, \
    parse_processes, utcnow
from monitor.rules import RuleSet, fingerprint, load_rules
from monitor.settings import Settings
from monitor.store import STORE_ERRORS, FeedRow, SourceState, Store
from monitor.workers import Fetching


class App:
    NOTICE_RETRY = timedelta(minutes=10)
    NOTICE_LEASE = timedelta(minutes=10)  # a notice's sender holds it this long, then others
    CLOCK_CHECK = timedelta(minutes=10)  # how often the database's clock is compared with ours
    CLOCK_WARN = timedelta(seconds=5)  # a difference worth an operator's look

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ruleset: RuleSet | None = None
        self.store: Store | None = None
        self.fetching: Fetching | None = None
        self.stopping = False  # set on SIGTERM/SIGINT: finish what is under way, take no more
        self.scheduler: AsyncIOScheduler | None = None  # the daemon's (not burst mode's)
        self.notifiers: dict[str, Notifier] = {}
        self._inflight: set[asyncio.Task] = set()
        self._delivering = False  # a delivery tick is under way
        self._deliver_again = False  # woken while it was: it runs another pass
        self._notices_due_at = 0.0  # monotonic: when owed notices are next tried
        self._clock_due_at = 0.0  # monotonic: when the database's clock is next compared
        self._owed: asyncio.Task[None] | None = None  # trying them, in the background
        self._reloading = asyncio.Lock()
        self.destinations = settings.configured_destinations()
        # The rules directory as last loaded (or last tried): a change shows as a difference.
        self._rules_seen: tuple = ()

    async def start(self) -> None:
        """Load rules (all or nothing), open and migrate the store, sync sources."""
        settings = self.settings
        compiled = await asyncio.to_thread(self._compile)
        self.ruleset = compiled.ruleset
        self.store = await asyncio.to_thread(Store.open, settings.database_url)
        self.notifiers = build_notifiers(settings)
        self.routing = Routing(default=default_destinations(self.notifiers),
                               destinations_by_name={n: d for n, d in self.destinations.items()
                                                     if n in self.notifiers})
        await self._check_clock()
        await self._adopt(compiled)
        self.fetching = Fetching(settings, parse_processes(settings))
        self.poller = Poller(settings, self.store, self.fetching, compiled, self.routing,
                             notice=self.tell_operator)
        self.dispatcher = Dispatcher(settings, self.store, self.notifiers, self.destinations)
        log.info("monitor started", sources=len(self.ruleset.feeds),
                 rules=len(self.ruleset.rules), destinations=",".join(self.routing.default),
                 database=self.store.engine.url.render_as_string(hide_password=True))

    def _compile(self) -> Compiled:
        """Load and compile the rules directory (all or nothing): CPU work, run in a thread.
        The fingerprint is taken first, so a change made during the load shows up later."""
        self._rules_seen = fingerprint(self.settings.rules_dir)
        return compile_ruleset(load_rules(self.settings.rules_dir,
                                          destinations=self.destinations))

    async def reload_if_changed(self) -> bool:
        """Reload when the rules directory differs from what was last loaded or tried. The
        file watcher normally gets there first; this catches what it cannot see."""
        if fingerprint(self.settings.rules_dir) == self._rules_seen:
            return False
        log.info("rules directory changed", rules_dir=str(self.settings.rules_dir))
        return await self.reload()

    async def _adopt(self, compiled: Compiled) -> None:
        """Make the sources follow feeds.yaml and say where each rule will send."""
        assert self.store is not None
        await asyncio.to_thread(self.store.sync_sources, [
            FeedRow(f.url, f.name, self.settings.interval_for(f.interval),
                    pinned=f.interval is not None)
            for f in compiled.ruleset.feeds], self.store.clock())
        for rule in compiled.ruleset.rules:
            missing = [d for d in rule.notify or () if d not in self.notifiers]
            if missing:  # configured, but its notifier could not be built (logged then)
                log.warning("rule routes to unavailable destinations", rule=rule.id,
                            missing=",".join(missing),
                            using=",".join(self.routing.destinations(rule)))

    async def reload(self) -> bool:
        """Reload the rules directory. An invalid change is reported and the rules in force
        stay in force; a valid one is compiled off the event loop and swapped in whole. One
        reload at a time, so an older compile can never be swapped in after a newer one."""
        async with self._reloading:
            try:
                compiled = await asyncio.to_thread(self._compile)
            except RulesError as exc:
                for problem in exc.problems:
                    log.error("rules problem", problem=str(problem))
                log.error("rules not reloaded: keeping the rules in force",
                          problems=len(exc.problems))
                return False
            except Exception:
                log.exception("rules not reloaded: keeping the rules in force")
                return False
            try:
                await self._adopt(compiled)
            except Exception:
                log.exception("sources not updated from the new feeds.yaml")
            self.ruleset = compiled.ruleset
            self.poller.use(compiled)
            log.info("rules reloaded", sources=len(compiled.ruleset.feeds),
                     rules=len(compiled.ruleset.rules))
            return True

    async def _watch_rules(self, stop: asyncio.Event) -> None:
        """Reload when a file in the rules directory changes. Editors save by writing a new
        file and renaming it over the old one, so additions and deletions count too."""
        from watchfiles import awatch

        async for _ in awatch(self.settings.rules_dir, stop_event=stop, debounce=300,
                              recursive=False):
            await self.reload()

    async def close(self) -> None:
        if self._owed is not None and not self._owed.done():
            self._owed.cancel()  # a notice it had claimed is given back, or recorded as sent
            await asyncio.gather(self._owed, return_exceptions=True)
        if self.fetching is not None:
            await self.fetching.aclose()
        for notifier in self.notifiers.values():
            await notifier.aclose()
        if self.store is not None:
            self.store.close()

    async def poll_due(self, *, every_source: bool = False) -> list[PollReport]:
        """Poll the sources that are due, taking them a batch at a time (`_poll_claimed`);
        `every_source`: all of them, now (burst mode)."""
        assert self.store is not None
        self._owe_notices()
        await self._check_clock()
        if every_source:
            sources = await asyncio.to_thread(self.store.sources)
            return await self.poller.poll(sources)
        reports = await self._poll_claimed()
        await self.poller.flush()
        return reports

    async def _check_clock(self) -> None:
        """Every `CLOCK_CHECK`, measure how far the database's clock is from this host's:
        leases are taken and judged, and the times the daemon writes are taken, by the
        database's (`Store.clock`). A host whose clock is off is worth a warning all the
        same: its scheduler (ticks, digests) runs by the host's clock (see `_wake_delivery`)."""
        assert self.store is not None
        if time.monotonic() < self._clock_due_at:
            return
        self._clock_due_at = time.monotonic() + self.CLOCK_CHECK.total_seconds()
        try:
            offset = await asyncio.to_thread(self.store.measure_clock)
        except STORE_ERRORS as exc:
            log.warning("cannot read the database's clock", error=str(exc)[:300])
            self._clock_due_at = time.monotonic() + 30  # soon: leases depend on it
            return
        if abs(offset) > self.CLOCK_WARN:
            log.warning("this host's clock disagrees with the database server's: leases "
                        "follow the server's; check the host's time sync",
                        host_ahead_s=round(-offset.total_seconds(), 1))

    def _owe_notices(self) -> None:
        """Try again, every `NOTICE_RETRY` at most and in the background (a channel that is
        down must not hold up polling), the notices no poll will: those of disabled sources
        that no destination took, and those whose sender died before saying they went out
        (failing and recovered notices no destination took are tried again by their source's
        next poll)."""
        if time.monotonic() < self._notices_due_at or \
                (self._owed is not None and not self._owed.done()):
            return
        self._notices_due_at = time.monotonic() + self.NOTICE_RETRY.total_seconds()
        self._owed = asyncio.get_running_loop().create_task(self._owed_notices())

    async def _owed_notices(self) -> None:
        assert self.store is not None
        if not any(name in self.notifiers for name in self._operator_destinations()):
            return  # nobody to tell
        try:
            owed = await asyncio.to_thread(self.store.owing_notices, self.store.clock())
        except Exception:
            log.exception("cannot read the notices owed")
            return
        for source, kind, resend in owed:
            try:
                if resend:
                    await self._resend_notice(source, kind)
                else:
                    await self.tell_operator(source, kind, source.disabled_reason or kind)
            except Exception:
                log.exception("cannot send a notice owed", url=source.url)

    async def _resend_notice(self, source: SourceState, kind: str) -> None:
        """A notice whose sender died between claiming it and saying it went out. Sent by
        one instance; if no destination takes it (or this one stops before any has), it is
        tried again once this claim has run out."""
        assert self.store is not None
        now = self.store.clock()
        if not await asyncio.to_thread(self.store.retake_notice, source.id, kind, now,
                                       lease=self.NOTICE_LEASE):
            return
        detail = {"disabled": source.disabled_reason, "failing": source.last_error,
                  "recovered": "fetched again"}.get(kind) or kind
        if kind == "failing":  # the message counts a failure being recorded: not here
            source = replace(source,
                             consecutive_failures=max(source.consecutive_failures - 1, 0))
        await self._send_claimed(source, kind, detail, now, give_back=False)

    def _operator_destinations(self) -> tuple[str, ...]:
        return tuple(self.settings.operator_destinations or self.routing.default)

    async def _poll_claimed(self) -> list[PollReport]:
        """Due sources, leased from the store a batch at a time while earlier ones are still
        being polled: instances share the work, and no lease is taken long before its poll.
        Delivery is woken as soon as a poll raises alerts. Once the daemon is stopping no more
        are taken, and sources taken but not polled (the tick was cancelled) are given back."""
        assert self.store is not None
        # Up to four sources per fetch slot are taken at a time, more when half are done:
        # few enough that other instances get their share, and their leases are renewed
        # while they wait (`_renew_leases`).
        slots = self.settings.fetch_concurrency
        lease = self.settings.source_lease
        running: dict[asyncio.Task[PollReport], int] = {}
        reports: list[PollReport] = []
        more = True
        heartbeat = asyncio.create_task(self._renew_leases(running))
        try:
            while True:
                if more and not self.stopping and len(running) <= 2 * slots:
                    wanted = 4 * slots - len(running)
                    try:
                        taken = await asyncio.to_thread(self.store.claim_due_sources,
                                                        self.store.clock(), lease=lease,
                                                        limit=wanted)
                    except Exception:
                        # The polls under way finish; the next tick tries again.
                        log.exception("cannot take due sources")
                        taken, more = [], False
                    more = more and len(taken) == wanted
                    running.update({asyncio.create_task(self.poller.poll_source(s)): s.id
                                    for s in taken})
                if not running:
                    return reports
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    del running[task]
                    reports.append(task.result())
                    if reports[-1].alerts:
                        self._deliver_soon()
        finally:
            heartbeat.cancel()
            if running:
                for task in running:
                    task.cancel()
                await asyncio.wait(running)
                await asyncio.to_thread(self.store.release_sources, list(running.values()))
                log.info("sources given back unpolled", sources=len(running))

    async def _renew_leases(self, running: dict[asyncio.Task[PollReport], int]) -> None:
        """While sources wait for a fetch slot and are polled, keep their leases: a queue
        behind a slow host must not let another instance (or this one) take them again."""
        assert self.store is not None
        lease = self.settings.source_lease
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                await asyncio.to_thread(self.store.renew_source_leases,
                                        list(running.values()), self.store.clock() + lease)
            except Exception:
                log.exception("cannot renew source leases")

    async def tell_operator(self, source: SourceState, kind: str, detail: str) -> None:
        """One message per failure streak, and one when it ends, to the operator's
        destinations; claimed in the store, so one instance sends it. If no destination takes
        it, the claim is given back and the next poll tries again (for a disabled source,
        never polled again: `_owed_notices`)."""
        assert self.store is not None
        now = self.store.clock()
        if not await asyncio.to_thread(self.store.take_notice, source.id, kind, now,
                                       lease=self.NOTICE_LEASE):
            return
        await self._send_claimed(source, kind, detail, now, give_back=True)

    async def _send_claimed(self, source: SourceState, kind: str, detail: str, now: datetime,
                            *, give_back: bool) -> None:
        """Send a notice this instance has claimed to each operator destination, then record
        it as sent (until it is, it would go out again once its claim ran out). If none took
        it: `give_back` the claim, or leave it to run out (and be tried again then)."""
        store = self.store
        assert store is not None
        message = source_notice(source, kind, detail, now)
        took = False
        try:
            for name in self._operator_destinations():
                notifier = self.notifiers.get(name)
                if notifier is None:
                    continue
                try:
                    await notifier.send(message)
                    took = True
                except Exception as exc:
                    log.warning("operator notice not delivered", destination=name,
                                source=source.url, error=str(exc)[:300])
        except asyncio.CancelledError:
            # Stopping, now, before the loop goes: sent, or the claim given back.
            if took:
                store.notice_sent(source.id, kind)
            elif give_back:
                store.give_back_notice(source.id, kind, source.failure_noticed_at)
            raise
        (log.info if kind == "recovered" else log.error)(
            "source " + kind, url=source.url, detail=detail, notified=took)
        if took:
            await record_sent(lambda: store.notice_sent(source.id, kind),
                              "cannot record a sent notice yet", source=source.id)
        elif give_back:
            await asyncio.to_thread(store.give_back_notice, source.id, kind,
                                    source.failure_noticed_at)

    async def deliver(self) -> DeliveryReport:
        return await self.dispatcher.deliver_due()

    async def run_once(self) -> tuple[list[PollReport], DeliveryReport]:
        await self.start()
        try:
            polls = await self.poll_due(every_source=True)
            delivery = await self.deliver()
            if self._owed is not None:
                await self._owed
            log.info("run finished", sources=len(polls),
                     failed=sum(1 for p in polls if p.error), new=sum(p.new for p in polls),
                     alerts=sum(p.alerts for p in polls), sent=delivery.sent,
                     retrying=delivery.retried, dead=delivery.dead)
            return polls, delivery
        finally:
            await self.close()

    # The daemon ------------------------------------------------------------------------------

    def _track(self, coro_fn):  # type: ignore[no-untyped-def]
        """Wrap a tick so shutdown can wait for it to finish."""
        async def tick() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._inflight.add(task)
            try:
                await coro_fn()
            except Exception:
                log.exception("tick failed", tick=coro_fn.__name__)
            finally:
                self._inflight.discard(task)
        tick.__name__ = coro_fn.__name__
        return tick

    async def _poll_tick(self) -> None:
        await self.reload_if_changed()
        await self.poll_due()  # wakes delivery as soon as a poll raises alerts

    def _deliver_soon(self) -> None:
        """Tell people fast: a delivery pass now, not at the next delivery tick (in the
        daemon; burst mode delivers once its polls are done)."""
        if self.scheduler is None:
            return
        if self._delivering:
            # APScheduler would skip a run while one is under way, leaving these alerts to
            # the next tick: the pass under way runs another when it ends instead.
            self._deliver_again = True
        else:
            self.scheduler.modify_job("deliver", next_run_time=utcnow())

    async def _wake_delivery(self, due: datetime | None = None) -> None:
        """A digest's time (`due`) has come by this host's clock, which APScheduler goes by.
        Its alerts are released by the database server's (`Store.clock`): where that is
        behind (this host runs ahead), wake delivery again once it gets there too, rather
        than leave the digest to a later delivery tick."""
        assert self.store is not None
        due = due or utcnow()
        behind = due - self.store.clock()
        if behind > timedelta(0) and self.scheduler is not None:
            self.scheduler.add_job(self._wake_delivery, "date", args=(due,),
                                   run_date=utcnow() + behind, misfire_grace_time=None)
            return
        self._deliver_soon()

    async def _deliver_tick(self) -> None:
        self._delivering = True
        try:
            while True:
                self._deliver_again = False
                await self.deliver()
                if not self._deliver_again or self.stopping:
                    return
        finally:
            self._delivering = False

    async def run_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task] = set()

        def on_hangup() -> None:
            task = loop.create_task(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        watcher = loop.create_task(self._watch_rules(stop))
        self.scheduler = scheduler = AsyncIOScheduler(timezone="UTC")
        now = utcnow()
        scheduler.add_job(self._track(self._poll_tick), "interval", id="poll",
                               seconds=self.settings.poll_tick.total_seconds(),
                               next_run_time=now, max_instances=1, coalesce=True,
                               misfire_grace_time=None)
        scheduler.add_job(self._track(self._deliver_tick), "interval", id="deliver",
                               seconds=self.settings.delivery_tick.total_seconds(),
                               next_run_time=now, max_instances=1, coalesce=True,
                               misfire_grace_time=None)
        for name, destination in self.destinations.items():
            trigger = destination.schedule.trigger()
            if trigger is not None and name in self.notifiers:
                # A digest is due at its time: deliver then, not at the next tick.
                scheduler.add_job(self._wake_delivery, trigger, id=f"digest:{name}",
                                       misfire_grace_time=None, coalesce=True)
                log.info("digest scheduled", destination=name,
                         schedule=destination.spec.schedule,
                         next=trigger.get_next_fire_time(None, now).isoformat())
        scheduler.start()
        try:
            await stop.wait()
            self.stopping = True
            log.info("stopping", inflight=len(self._inflight))
            # Pause, not shut down: shutting APScheduler's asyncio executor down cancels the
            # ticks that are running, and they should finish.
            scheduler.pause()
            if self._inflight:
                done, pending = await asyncio.wait(
                    set(self._inflight), timeout=self.settings.shutdown_grace.total_seconds())
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending)
                    log.warning("stopped with work unfinished", tasks=len(pending))
            scheduler.shutdown(wait=False)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            stop.set()
            await asyncio.gather(watcher, *reloads, return_exceptions=True)
            await self.close()
            log.info("monitor stopped")
