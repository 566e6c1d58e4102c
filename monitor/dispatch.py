"""The story of a delivery: claim due alerts → render → send → record.

The dispatcher alone owns attempts and backoff. A notifier says "sent" by returning,
"later" by raising RetryLater, "never" by raising PermanentFailure; any other exception is a
bug in a notifier and is retried like a transient failure, with the traceback logged. An
alert leaves `pending` only as `sent` or, after a permanent failure or too many attempts,
`dead`, with the reason kept for a person to read.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from monitor.errors import PermanentFailure, RetryLater
from monitor.logs import log
from monitor.notify import Notifier
from monitor.notify.message import AlertMessage, RuleHit, snippet
from monitor.pipeline import utcnow
from monitor.settings import Settings
from monitor.store import PendingAlert, Store

MAX_RETRY_DELAY = timedelta(minutes=30)
BATCH = 100  # alerts taken by one pass


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    dead: int = 0
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


class Dispatcher:
    def __init__(self, settings: Settings, store: Store, notifiers: Mapping[str, Notifier]):
        self.settings = settings
        self.store = store
        self.notifiers = notifiers
        # A pass holds what it took for longer than it can take to send it all one by one, so
        # no other pass or instance takes an alert that is still being sent.
        self.lease = settings.notify_timeout * BATCH + timedelta(minutes=5)

    async def deliver_due(self) -> DeliveryReport:
        alerts = await asyncio.to_thread(self.store.claim_due_alerts, utcnow(),
                                         lease=self.lease, limit=BATCH)
        report = DeliveryReport()
        by_destination: dict[str, list[PendingAlert]] = {}
        for alert in alerts:
            by_destination.setdefault(alert.destination, []).append(alert)
        # Destinations in parallel, each one's alerts in order.
        await asyncio.gather(*(self._deliver_all(name, batch, report)
                               for name, batch in by_destination.items()))
        return report

    async def _deliver_all(self, destination: str, alerts: list[PendingAlert],
                           report: DeliveryReport) -> None:
        done = 0
        try:
            for alert in alerts:
                pause = await self._deliver(destination, alert, report)
                done += 1
                if pause is not None:
                    # The channel is down or asked us to wait: the rest of its alerts wait as
                    # long, without spending an attempt (and a timeout) each on it.
                    rest = [a.id for a in alerts[done:]]
                    await asyncio.to_thread(self.store.release, rest, until=utcnow() + pause)
                    log.info("destination paused", destination=destination, alerts=len(rest),
                             seconds=round(pause.total_seconds(), 1))
                    return
        except asyncio.CancelledError:
            # Stopping: what was not tried is given back at once rather than at lease expiry.
            self.store.release([a.id for a in alerts[done:]])
            raise

    async def _deliver(self, destination: str, alert: PendingAlert,
                       report: DeliveryReport) -> timedelta | None:
        """Try one alert; if it must be retried, return how long its destination should rest."""
        attempts = alert.attempts + 1
        notifier = self.notifiers.get(destination)
        try:
            if notifier is None:
                raise RetryLater(f"destination {destination!r} is not configured")
            await notifier.send(build_message(alert))
        except PermanentFailure as exc:
            await asyncio.to_thread(self.store.mark_dead, alert.id, str(exc))
            report.dead += 1
            report.errors.append(str(exc))
            log.error("alert failed permanently", alert=alert.id, destination=destination,
                      error=str(exc))
        except Exception as exc:  # RetryLater, or a notifier bug: both are retried.
            if isinstance(exc, RetryLater):
                reason, asked = str(exc), exc.after
            else:
                reason, asked = f"unexpected {type(exc).__name__}: {exc}", None
                log.exception("notifier error", alert=alert.id, destination=destination)
            report.errors.append(reason)
            if attempts >= self.settings.delivery_max_attempts:
                await asyncio.to_thread(self.store.mark_dead, alert.id,
                                        f"gave up after {attempts} attempts: {reason}")
                report.dead += 1
                log.error("alert failed permanently", alert=alert.id, destination=destination,
                          attempts=attempts, error=reason)
                return None
            delay = retry_delay(self.settings.delivery_retry_base, attempts, asked)
            await asyncio.to_thread(self.store.mark_retry, alert.id, reason, utcnow() + delay)
            report.retried += 1
            log.warning("alert delivery failed", alert=alert.id, destination=destination,
                        attempts=attempts, retry_in_s=round(delay.total_seconds(), 1),
                        error=reason)
            return delay
        else:
            await asyncio.to_thread(self.store.mark_sent, alert.id, utcnow())
            report.sent += 1
            log.info("alert sent", alert=alert.id, destination=destination, attempts=attempts)
        return None
