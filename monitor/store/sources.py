"""The sources' side of the store: their state, following feeds.yaml, leases, and polls that
failed or brought nothing new. A poll that brought items is recorded in items.py (`save_poll`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Integer, and_, bindparam, case, func, or_, select, text, true, update
from sqlalchemy.orm import Session

from monitor.store.base import SOURCES_LOCK, StoreBase
from monitor.store.models import Item, Source


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
    notice_pending: str | None = None  # a notice claimed, not yet known to be sent
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


class OwedNotice(NamedTuple):
    source: SourceState
    kind: str
    resend: bool  # claimed by a sender that died before it went out (else: never claimed)


@dataclass(frozen=True)
class Unchanged:
    """A successful poll that brought nothing to store: a 304, or the same body again."""

    source_id: int
    status: int
    etag: str | None
    last_modified: str | None
    next_poll_at: datetime
    interval: timedelta | None = None  # the adapted interval, for a source that adapts


# A disabled source whose "disabled" notice has not gone out: none since it was disabled (a
# "failing" notice before that does not count).
_DISABLED_NOTICE_OWED = and_(Source.disabled_at.is_not(None),
                             or_(Source.failure_noticed_at.is_(None),
                                 Source.failure_noticed_at < Source.disabled_at))
# A notice claimed and not known to be sent that the source's state still calls for: a
# "failing" notice for a source that works again is not sent late.
_PENDING_APPLIES = or_(
    and_(Source.notice_pending == "failing", Source.failing_since.is_not(None)),
    and_(Source.notice_pending == "recovered", Source.failing_since.is_(None)),
    and_(Source.notice_pending == "disabled", Source.disabled_at.is_not(None)))


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
        leased_until=source.leased_until, notice_pending=source.notice_pending)


class SourcesMixin(StoreBase):
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
                    source.notice_pending = source.notice_pending_until = None
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

    def take_notice(self, source_id: int, kind: str, now: datetime, *,
                    lease: timedelta) -> bool:
        """Claim the right to tell the operator that a source is failing (or disabled), or
        that it has recovered: true for exactly one caller per failure streak, across
        instances. The claim is held until `now + lease`: `notice_sent` ends it, and
        `give_back_notice` undoes it when the message could not be sent; if neither comes
        (the sender died), `owing_notices` finds it and `retake_notice` claims it again."""
        if kind == "recovered":
            condition, value = Source.failure_noticed_at.is_not(None), None
        elif kind == "disabled":
            # Once per disabling, even after a "failing" notice: claimed, the notice time is
            # the disabling's or later (whichever instance's clock is behind).
            condition = _DISABLED_NOTICE_OWED
            value = case((Source.disabled_at > now, Source.disabled_at), else_=now)
        else:
            condition, value = Source.failure_noticed_at.is_(None), now
        with Session(self.engine) as session, session.begin():
            result = session.execute(update(Source).where(Source.id == source_id, condition)
                                     .values(failure_noticed_at=value, notice_pending=kind,
                                             notice_pending_until=now + lease))
            return result.rowcount == 1  # type: ignore[attr-defined]

    def retake_notice(self, source_id: int, kind: str, now: datetime, *,
                      lease: timedelta) -> bool:
        """Claim again a notice whose sender died before saying it was sent (its claim ran
        out): true for one caller."""
        with Session(self.engine) as session, session.begin():
            result = session.execute(update(Source).where(
                Source.id == source_id, Source.notice_pending == kind,
                Source.notice_pending_until < now, _PENDING_APPLIES)
                .values(notice_pending_until=now + lease))
            return result.rowcount == 1  # type: ignore[attr-defined]

    def notice_sent(self, source_id: int, kind: str) -> None:
        """The notice claimed went out: nothing is owed."""
        with Session(self.engine) as session, session.begin():
            session.execute(update(Source).where(Source.id == source_id,
                                                 Source.notice_pending == kind)
                            .values(notice_pending=None, notice_pending_until=None))

    def give_back_notice(self, source_id: int, kind: str, noticed_at: datetime | None) -> None:
        """Undo `take_notice`: `noticed_at` is what the source had before it. (Not for a
        disabled source enabled meanwhile: its record starts afresh.)"""
        still = Source.disabled_at.is_not(None) if kind == "disabled" else true()
        mine = Source.notice_pending == kind  # not a claim of another kind taken since
        with Session(self.engine) as session, session.begin():
            session.execute(update(Source).where(Source.id == source_id, still).values(
                failure_noticed_at=None if kind == "failing" else noticed_at,
                notice_pending=case((mine, None), else_=Source.notice_pending),
                notice_pending_until=case((mine, None), else_=Source.notice_pending_until)))

    def owing_notices(self, now: datetime) -> list[OwedNotice]:
        """Notices no poll would try again: those of disabled sources that no destination
        took (never polled again), and those claimed by a sender that died before saying
        they went out (their claim ran out), while the source's state still calls for them."""
        died = and_(_PENDING_APPLIES, Source.notice_pending_until < now)
        with Session(self.engine) as session:
            return [OwedNotice(_state(s), s.notice_pending if resend else "disabled",
                               bool(resend))
                    for s, resend in session.execute(
                        select(Source, died.label("resend"))
                        .where(Source.active.is_(True), or_(_DISABLED_NOTICE_OWED, died))
                        .order_by(Source.id))]

    def enable_source(self, url: str, now: datetime) -> bool:
        """Poll a disabled source again, now, with its failure record cleared."""
        with Session(self.engine) as session, session.begin():
            result = session.execute(update(Source).where(Source.url == url).values(
                disabled_at=None, disabled_reason=None, consecutive_failures=0,
                failing_since=None, failure_noticed_at=None, notice_pending=None,
                notice_pending_until=None, next_poll_at=now))
            return result.rowcount == 1  # type: ignore[attr-defined]

    def source_overview(self) -> list[tuple[SourceState, int]]:
        """Every source feeds.yaml names (disabled ones too) with how many items it has
        brought."""
        with Session(self.engine) as session:
            counts = dict(session.execute(select(Item.source_id, func.count())
                                          .group_by(Item.source_id)).all())
            return [(_state(s), counts.get(s.id, 0)) for s in session.scalars(
                select(Source).where(Source.active.is_(True)).order_by(Source.id))]
