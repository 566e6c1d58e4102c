"""The story of a delivery: claim due alerts → plan messages → pace → send → record.

The dispatcher alone owns attempts, backoff and pacing. A notifier says "sent" by returning,
"later" by raising RetryLater, "never" by raising PermanentFailure; any other exception is a
bug in a notifier and is retried like a transient failure, with the traceback logged.

A pass claims what is due (`sending`, under a lease its heartbeat keeps fresh; a crashed
holder's alerts come back when the lease runs out, and a pass that outlived its lease settles
only what it still holds, except a send, which is recorded whoever holds it) and plans each
destination's messages: a digest destination's alerts go as one digest; a destination with
many alerts due at once gets them grouped rather than a flood; thread replies and the rest go
one by one. Messages to one destination are paced (Slack: one a second, short bursts allowed);
destinations run in parallel. A grouped message succeeds or fails as one, for every alert it
carries.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitor.destinations import Destination
from monitor.errors import PermanentFailure, RetryLater
from monitor.logs import log
from monitor.notify import Notifier
from monitor.notify.message import AlertGroup, AlertMessage, RuleHit, snippet
from monitor.settings import Settings
from monitor.store import PendingAlert, Store

MAX_RETRY_DELAY = timedelta(minutes=30)
BATCH = 200  # alerts taken by one pass
# Pauses before recording a send again when the store refused it (SQLite busy past its
# timeout, a PostgreSQL failover): an alert whose send is not recorded goes out again.
RECORD_RETRIES = (0.5, 2.0, 5.0)


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    messages: int = 0
    errors: list[str] = field(default_factory=list)


def build_message(alert: PendingAlert) -> AlertMessage:
    rules = tuple(RuleHit(r["id"], r.get("name") or r["id"], tuple(r.get("terms") or ()))
                  for r in alert.rules)
    terms = [t for rule in rules for t in rule.terms]
    return AlertMessage(title=alert.title, url=alert.url, source=alert.source_name,
                        published_at=alert.published_at, rules=rules,
                        snippet=snippet([alert.summary, alert.content], terms), also=alert.also)


def retry_delay(base: timedelta, attempts: int, asked: float | None) -> timedelta:
    """Exponential backoff with jitter; a channel's own Retry-After wins when longer."""
    delay = min(base * (2 ** min(attempts - 1, 16)), MAX_RETRY_DELAY)
    delay *= random.uniform(0.8, 1.2)
    if asked is not None:
        delay = max(delay, timedelta(seconds=asked))
    return delay


class Pacer:
    """A token bucket: at most one message per `interval` seconds, bursts of `burst`."""

    def __init__(self, interval: float, burst: int):
        self.interval = interval
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    async def wait(self) -> None:
        if self.interval <= 0:
            return
        self._refill()
        if self.tokens < 1:
            await asyncio.sleep((1 - self.tokens) * self.interval)
            self._refill()
        self.tokens -= 1

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) / self.interval)
        self.updated = now


@dataclass(frozen=True)
class Unit:
    """One message: a single alert (maybe a thread reply), or a group."""

    alerts: tuple[PendingAlert, ...]
    digest: str | None = None
    grouped: bool = False

    @property
    def ids(self) -> list[int]:
        return [a.id for a in self.alerts]


def plan(alerts: list[PendingAlert], destination: Destination | None,
         group_limit: int) -> list[Unit]:
    """The messages that carry one destination's due alerts, in order."""
    replies = [a for a in alerts if a.reply_to is not None]
    mains = [a for a in alerts if a.reply_to is None]
    units: list[Unit] = []
    digest = destination.schedule.every if destination and destination.schedule.digest \
        else None
    if digest:
        urgent = [a for a in mains if a.urgent]
        units += [Unit((a,)) for a in urgent]
        mains = [a for a in mains if not a.urgent]
    group_above = destination.spec.group_above if destination else 5
    if mains and (digest or len(mains) > group_above):
        for i in range(0, len(mains), group_limit):
            units.append(Unit(tuple(mains[i:i + group_limit]), digest=digest, grouped=True))
    else:
        units += [Unit((a,)) for a in mains]
    units += [Unit((a,)) for a in replies]
    return units


async def record_sent(write: Callable[[], object], warning: str, **fields: object) -> None:
    """Run a store write that records a message sent, in a thread, trying it again a few
    times (`RECORD_RETRIES`) if the store refuses: until it is recorded, the message would
    go out again."""
    for pause in (*RECORD_RETRIES, None):
        try:
            await asyncio.to_thread(write)
            return
        except Exception as exc:
            if pause is None:
                raise
            log.warning(warning, error=str(exc)[:300], retry_in_s=pause, **fields)
            await asyncio.sleep(pause)


def _held(ids: list[int], recorded: list[int]) -> None:
    """Warn about alerts whose failure this pass could not record: its lease ran out (the
    store was failing) and another pass took them, whose outcome stands."""
    lost = sorted(set(ids) - set(recorded))
    if lost:
        log.warning("delivery lease lost to another pass", alerts=lost)


class Dispatcher:
    def __init__(self, settings: Settings, store: Store, notifiers: Mapping[str, Notifier],
                 destinations: Mapping[str, Destination] | None = None):
        self.settings = settings
        self.store = store
        self.notifiers = notifiers
        self.destinations = dict(destinations if destinations is not None
                                 else settings.configured_destinations())
        self.lease = settings.delivery_lease
        self._pacers: dict[str, Pacer] = {}

    def _pacer(self, name: str) -> Pacer:
        if name not in self._pacers:
            destination = self.destinations.get(name)
            self._pacers[name] = Pacer(destination.pace if destination else 0.0,
                                       destination.spec.burst if destination else 1)
        return self._pacers[name]

    async def deliver_due(self, now: datetime | None = None) -> DeliveryReport:
        """One pass over what is due at `now` (default: the current time)."""
        alerts = await asyncio.to_thread(self.store.claim_due_alerts, now or self.store.clock(),
                                         lease=self.lease, limit=BATCH)
        report = DeliveryReport()
        if not alerts:
            return report
        held = {a.id for a in alerts}
        claim = alerts[0].claim  # one for the whole pass
        heartbeat = asyncio.create_task(self._heartbeat(held, claim))
        by_destination: dict[str, list[PendingAlert]] = {}
        for alert in alerts:
            by_destination.setdefault(alert.destination, []).append(alert)
        try:
            # Destinations in parallel, each one's messages in order. One that fails does not
            # end the pass while the others still send: the heartbeat keeps their lease
            # until every one has finished.
            outcomes = await asyncio.gather(*(self._deliver_all(name, batch, report, held,
                                                                claim)
                                              for name, batch in by_destination.items()),
                                            return_exceptions=True)
        finally:
            heartbeat.cancel()
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        for error in errors[1:]:
            log.error("delivery failed", error=f"{type(error).__name__}: {error}"[:300])
        if errors:
            raise errors[0]
        return report

    async def _heartbeat(self, held: set[int], claim: str) -> None:
        """Keep the lease of what this pass still holds, so that a long pass (paced, or
        waiting on a slow channel) does not lose its alerts to another pass."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                await asyncio.to_thread(self.store.extend_lease, sorted(held),
                                        self.store.clock() + self.lease, claim=claim)
            except Exception:
                log.exception("cannot extend the delivery lease")

    async def _deliver_all(self, destination: str, alerts: list[PendingAlert],
                           report: DeliveryReport, held: set[int], claim: str) -> None:
        notifier = self.notifiers.get(destination)
        units = plan(alerts, self.destinations.get(destination),
                     notifier.group_limit if notifier else 1)
        done = 0
        sending = False
        try:
            for unit in units:
                await self._pacer(destination).wait()
                sending = True
                pause = await self._deliver(destination, notifier, unit, report, claim)
                sending = False
                held.difference_update(unit.ids)
                done += 1
                if pause is not None:
                    # The channel is down or asked us to wait: the rest of its alerts wait as
                    # long, without spending an attempt (and a timeout) each on it.
                    rest = [i for u in units[done:] for i in u.ids]
                    await asyncio.to_thread(self.store.release, rest, claim=claim,
                                            until=self.store.clock() + pause)
                    held.difference_update(rest)
                    if rest:
                        log.info("destination paused", destination=destination,
                                 alerts=len(rest), seconds=round(pause.total_seconds(), 1))
                    return
        except BaseException as exc:
            # Stopping, or the store failed: what was not tried is given back at once rather
            # than at lease expiry. Not the message under way: it may have gone out, with its
            # record still being written; its alerts wait for their lease, and go again only
            # if unrecorded.
            rest = [i for u in units[done + (1 if sending else 0):] for i in u.ids]
            try:
                if isinstance(exc, asyncio.CancelledError):
                    self.store.release(rest, claim=claim)  # stopping: now, before the loop goes
                else:
                    await asyncio.to_thread(self.store.release, rest, claim=claim)
                held.difference_update(rest)
            except Exception:
                log.exception("cannot give back alerts not tried", alerts=rest)
            raise

    async def _record_sent(self, ids: list[int], ref: str | None) -> None:
        """Record a send: the message is out, and until it is recorded its alerts would go
        out again."""
        await record_sent(lambda: self.store.mark_sent(ids, self.store.clock(), ref=ref),
                          "cannot record a sent alert yet", alerts=ids)

    async def _deliver(self, destination: str, notifier: Notifier | None, unit: Unit,
                       report: DeliveryReport, claim: str) -> timedelta | None:
        """Send one message; if it must be retried, return how long its destination should
        rest."""
        attempts = max(a.attempts for a in unit.alerts) + 1
        count = len(unit.alerts)
        ids = unit.ids
        try:
            if notifier is None:
                raise RetryLater(f"destination {destination!r} is not configured")
            if unit.grouped:
                ref = await notifier.send_group(AlertGroup(
                    tuple(build_message(a) for a in unit.alerts), digest=unit.digest))
            else:
                [alert] = unit.alerts
                ref = await notifier.send(build_message(alert), reply_to=alert.reply_to)
        except PermanentFailure as exc:
            _held(ids, await asyncio.to_thread(self.store.mark_dead, ids, str(exc),
                                               self.store.clock(), claim=claim))
            report.dead += count
            report.errors.append(str(exc))
            log.error("alert failed permanently", alerts=ids, destination=destination,
                      error=str(exc))
        except Exception as exc:  # RetryLater, or a notifier bug: both are retried.
            if isinstance(exc, RetryLater):
                reason, asked = str(exc), exc.after
            else:
                reason, asked = f"unexpected {type(exc).__name__}: {exc}", None
                log.exception("notifier error", alerts=ids, destination=destination)
            report.errors.append(reason)
            if attempts >= self.settings.delivery_max_attempts:
                _held(ids, await asyncio.to_thread(
                    self.store.mark_dead, ids, f"gave up after {attempts} attempts: {reason}",
                    self.store.clock(), claim=claim))
                report.dead += count
                log.error("alert failed permanently", alerts=ids, destination=destination,
                          attempts=attempts, error=reason)
                return None
            delay = retry_delay(self.settings.delivery_retry_base, attempts, asked)
            now = self.store.clock()
            _held(ids, await asyncio.to_thread(self.store.mark_failed, ids, reason, now,
                                               now + delay, claim=claim))
            report.retried += count
            log.warning("alert delivery failed", alerts=ids, destination=destination,
                        attempts=attempts, retry_in_s=round(delay.total_seconds(), 1),
                        error=reason)
            return delay
        else:
            await self._record_sent(ids, ref if isinstance(ref, str) else None)
            report.sent += count
            report.messages += 1
            log.info("alert sent", alerts=ids, destination=destination, attempts=attempts,
                     **({"grouped": count} if unit.grouped else {}))
        return None
