"""Alerts in the store: due ones claimed for a delivery pass, each attempt settled, and alerts
read back for `monitor alerts`. Alerts are raised as items are saved (items.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from monitor.store.base import StoreBase, _label
from monitor.store.models import Alert, AlertAttempt, Item, Source

STATES = ("pending", "sending", "sent", "failed", "dead")


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
    claim: str = ""  # the token of the pass holding it: what it settles, releases and extends


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


class AlertsMixin(StoreBase):
    def claim_due_alerts(self, now: datetime, *, lease: timedelta,
                         limit: int = 100) -> list[PendingAlert]:
        """Take up to `limit` due alerts for one delivery pass: `sending` until settled, and
        skipped by every other pass until then or until the lease runs out (the holder
        crashed). A thread reply waits until its story's first alert is settled. They carry
        the pass's `claim`, which settling, releasing and extending them must name."""
        parent = aliased(Alert)
        claim = secrets.token_hex(8)
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
                            .values(status="sending", lease_until=now + lease, claim=claim))
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
                reply_to=parent_ref, claim=claim,
                also=() if alert.parent_id is not None else tuple(dict.fromkeys(
                    label for other_id, label in copies.get(alert.story_id, ())
                    if other_id != item.id and label != _label(source, item.publisher))))
                for alert, item, source, parent_ref in rows]

    @staticmethod
    def _held(alert_ids: Sequence[int], claim: str) -> Any:
        """These alerts, where the pass that took them with `claim` still holds them."""
        return and_(Alert.id.in_(list(alert_ids)), Alert.status == "sending",
                    Alert.claim == claim)

    def extend_lease(self, alert_ids: Sequence[int], until: datetime, *, claim: str) -> None:
        """A pass still working on these alerts keeps them (its heartbeat): those it still
        holds, not those another pass took after its lease ran out."""
        if alert_ids:
            with Session(self.engine) as session, session.begin():
                session.execute(update(Alert).where(self._held(alert_ids, claim))
                                .values(lease_until=until))

    def _settle(self, alert_ids: Sequence[int], now: datetime, outcome: str,
                error: str | None, held: Any, **values: Any) -> list[int]:
        """Record one attempt of the message that carried these alerts, on those `held`
        selects; returns their ids."""
        if not alert_ids:
            return []
        with Session(self.engine) as session, session.begin():
            ids = sorted(session.scalars(
                update(Alert).where(held)
                .values(attempts=Alert.attempts + 1, lease_until=None, claim=None, **values)
                .returning(Alert.id)))
            if ids:
                session.execute(self._insert(AlertAttempt).values([
                    {"alert_id": i, "at": now, "outcome": outcome,
                     "error": error[:2000] if error else None, "grouped": len(alert_ids)}
                    for i in ids]))
            return ids

    def mark_sent(self, alert_ids: Sequence[int], now: datetime, *,
                  ref: str | None = None) -> list[int]:
        """The message is out: recorded whoever holds its alerts now (a pass that took them
        after this one's lease ran out would otherwise send them again), unless already
        recorded as sent."""
        return self._settle(alert_ids, now, "sent", None,
                            and_(Alert.id.in_(list(alert_ids)), Alert.status != "sent"),
                            status="sent", sent_at=now, last_error=None, message_ref=ref)

    def mark_failed(self, alert_ids: Sequence[int], error: str, now: datetime,
                    next_attempt_at: datetime, *, claim: str) -> list[int]:
        return self._settle(alert_ids, now, "failed", error, self._held(alert_ids, claim),
                            status="failed", last_error=error[:2000],
                            next_attempt_at=next_attempt_at)

    def mark_dead(self, alert_ids: Sequence[int], error: str, now: datetime, *,
                  claim: str) -> list[int]:
        return self._settle(alert_ids, now, "dead", error, self._held(alert_ids, claim),
                            status="dead", last_error=error[:2000])

    def release(self, alert_ids: Sequence[int], *, claim: str,
                until: datetime | None = None) -> None:
        """Give claimed alerts back without counting an attempt, due again at `until` (or as
        they were): the pass stopped before trying them."""
        if not alert_ids:
            return
        values: dict[str, Any] = {"lease_until": None, "claim": None, "status": case(
            (Alert.attempts > 0, "failed"), else_="pending")}
        if until is not None:
            values["next_attempt_at"] = until
        with Session(self.engine) as session, session.begin():
            session.execute(update(Alert).where(self._held(alert_ids, claim))
                            .values(**values))

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

    def alert_counts(self) -> dict[str, int]:
        with Session(self.engine) as session:
            return dict(session.execute(select(Alert.status, func.count()).group_by(
                Alert.status)).all())
