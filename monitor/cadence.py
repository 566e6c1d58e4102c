"""When a source is polled next: how often it publishes, what its server asks, how it fails.

A source whose interval feeds.yaml sets keeps it. Any other adapts between
`MONITOR_POLL_MIN_INTERVAL` and `MONITOR_POLL_MAX_INTERVAL`: a body that brings dated items
sets the interval to half the typical gap between them (or half the time since the newest, when
the feed has gone quiet), so a wire feed is polled often and a weekly blog rarely; each poll
that finds nothing new lengthens it by a quarter.

The server has its say on top: RSS `<ttl>` and `Cache-Control: max-age` put the next poll no
earlier than they ask (up to the maximum interval: a cache setting must not silence a news
feed for a day), and `Retry-After` on a 429 or 503 is honoured in full, up to `MAX_BACKOFF`.
Failures back off exponentially from the interval. Every delay gets up to 10% of jitter, only
ever upward where the server named a time, so sources added together drift apart.

Pure: no I/O, and the clock comes in as an argument.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_BACKOFF = timedelta(hours=6)
JITTER = 0.1
QUIET_GROWTH = 1.25
# Dates further in the future than this are not believed (a publisher's clock, or a typo).
CLOCK_SKEW = timedelta(hours=1)
RECENT_ITEMS = 20


@dataclass(frozen=True)
class Bounds:
    low: timedelta
    high: timedelta

    def clamp(self, value: timedelta) -> timedelta:
        return max(self.low, min(self.high, value))


@dataclass(frozen=True)
class Hints:
    """What the server said about polling again: RSS `<ttl>`, `Cache-Control: max-age`."""

    ttl: timedelta | None = None
    max_age: timedelta | None = None

    def floor(self, cap: timedelta) -> timedelta:
        asked = [h for h in (self.ttl, self.max_age) if h is not None and h > timedelta(0)]
        return min(max(asked), cap) if asked else timedelta(0)


def publishing_interval(published: Iterable[datetime | None], now: datetime,
                        bounds: Bounds) -> timedelta | None:
    """Half the typical gap between the newest dated items, or half the time since the newest
    if that is longer; None when fewer than two items carry distinct believable dates."""
    dates = sorted(d for d in published if d is not None and d <= now + CLOCK_SKEW)
    dates = dates[-RECENT_ITEMS:]
    if len(dates) < 2:
        return None
    # Items stamped with one time (a feed that dates everything when it is built) say nothing
    # about how often it publishes.
    gaps = [later - earlier for earlier, later in zip(dates, dates[1:]) if later > earlier]
    if not gaps:
        return None
    typical = statistics.median(gaps)
    quiet = max(now - dates[-1], timedelta(0))
    return bounds.clamp(max(typical, quiet) / 2)


def after_content(current: timedelta, published: Iterable[datetime | None], now: datetime,
                  bounds: Bounds) -> timedelta:
    """The adapted interval after a poll that brought a body to read."""
    return publishing_interval(published, now, bounds) or bounds.clamp(current)


def after_nothing_new(current: timedelta, bounds: Bounds) -> timedelta:
    """The adapted interval after a 304, or a body the same as last time."""
    return bounds.clamp(current * QUIET_GROWTH)


def next_poll(interval: timedelta, now: datetime, hints: Hints = Hints(), *,
              cap: timedelta | None = None) -> datetime:
    """The interval with jitter, but no earlier than the server asked (up to `cap`)."""
    floor = hints.floor(cap if cap is not None else interval)
    if floor > interval:
        return now + floor * random.uniform(1, 1 + JITTER)
    return now + interval * random.uniform(1 - JITTER / 2, 1 + JITTER / 2)


def failure_backoff(interval: timedelta, failures: int, now: datetime,
                    retry_after: float | None = None) -> datetime:
    """Exponential backoff from the interval after `failures` consecutive failures (this one
    included), and never sooner than a `Retry-After`."""
    delay = min(interval * (2 ** min(max(failures - 1, 0), 10)), MAX_BACKOFF)
    if retry_after:
        asked = timedelta(seconds=min(retry_after, MAX_BACKOFF.total_seconds()))
        if asked >= delay:
            return now + asked * random.uniform(1, 1 + JITTER)
    return now + delay * random.uniform(1, 1 + JITTER)
