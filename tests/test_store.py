"""The store on a real SQLite file: migrations, WAL, and uniqueness held by the database."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from conftest import rss
from monitor.normalize import normalize_entry
from monitor.parse import parse_feed
from monitor.store import Outgoing, Planned, Store
from monitor.store.db import MIGRATIONS
from monitor.store.models import Base

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def open_store(path: Path) -> Store:
    return Store.open(f"sqlite:///{path}")


def an_item(guid: str = "g", title: str = "Cosco"):  # noqa: ANN201
    feed = parse_feed(rss([{"guid": guid, "title": title,
                            "link": f"http://ex.org/news/{guid}"}]),
                      url="http://ex.org/feed")
    return normalize_entry(feed.entries[0])


def test_migrations_create_the_schema_and_are_idempotent(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    store.close()
    store = open_store(tmp_path / "m.db")
    tables = set(inspect(store.engine).get_table_names())
    assert {"sources", "items", "stories", "alerts", "alembic_version"} <= tables
    store.close()
    with sqlite3.connect(tmp_path / "m.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert version == ScriptDirectory.from_config(config).get_current_head()
    assert version >= "0003"


def test_the_migrations_build_exactly_the_models(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    with store.engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    store.close()
    assert drift == []


def test_sources_follow_the_feeds_file(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    store.sync_sources([("http://a/", "A", timedelta(minutes=10)),
                        ("http://b/", None, timedelta(minutes=5))], NOW)
    due = store.claim_due_sources(NOW, lease=timedelta(minutes=1), limit=10)
    assert [s.url for s in due] == ["http://a/", "http://b/"]
    store.sync_sources([("http://b/", "B", timedelta(minutes=5))], NOW)
    assert [(s.url, s.name) for s in store.sources()] == [("http://b/", "B")]
    assert len(store.sources(active_only=False)) == 2
    store.close()


def test_an_item_and_its_alerts_are_recorded_once_whoever_writes_first(tmp_path: Path) -> None:
    one = open_store(tmp_path / "m.db")
    two = open_store(tmp_path / "m.db")  # a second writer on the same file
    one.sync_sources([("http://a/", "A", timedelta(minutes=10))], NOW)
    [source] = one.sources()
    outgoing = Outgoing(an_item(), ("cosco",),
                        {"slack": Planned([{"id": "cosco", "name": "C", "terms": ["Cosco"]}]),
                         "email": Planned([{"id": "cosco", "name": "C", "terms": ["Cosco"]}])})
    kwargs = dict(changed=[], status=200, etag=None, last_modified=None, feed_title="T",
                  now=NOW, next_poll_at=NOW + timedelta(minutes=10))
    first = one.save_poll(source, new=[outgoing], **kwargs)
    second = two.save_poll(source, new=[outgoing], **kwargs)
    assert (first.new, first.alerts) == (1, 2)
    assert (second.new, second.alerts) == (0, 0)
    lease = timedelta(minutes=10)
    claimed = one.claim_due_alerts(NOW, lease=lease)
    assert sorted(a.destination for a in claimed) == ["email", "slack"]
    assert two.claim_due_alerts(NOW, lease=lease) == []  # held by the first pass
    [alert] = [a for a in claimed if a.destination == "slack"]
    one.mark_sent([alert.id], NOW)
    one.mark_failed([alert.id], "late", NOW, NOW, claim=alert.claim)  # sent stays sent
    # The holder of the email alert "crashed": its lease runs out and another pass takes it.
    assert two.claim_due_alerts(NOW + lease / 2, lease=lease) == []
    [again] = two.claim_due_alerts(NOW + lease * 2, lease=lease)
    assert again.destination == "email"
    assert one.alert_counts() == {"sending": 1, "sent": 1}
    one.close()
    two.close()


def alert_claims_stay_with_their_pass(url: str) -> None:
    """A delivery pass whose lease ran out (stalled on a failing store, say) cannot extend,
    give back or settle what another pass has taken since; a message it did send is recorded
    all the same, or it would go out again. (Run on PostgreSQL too: test_postgres.py.)"""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from monitor.store.models import Alert

    store = Store.open(url)
    store.sync_sources([("http://a/", "A", timedelta(minutes=10))], NOW)
    [source] = store.sources()
    rules = {"slack": Planned([{"id": "cosco", "name": "C", "terms": ["Cosco"]}])}
    store.save_poll(source, new=[Outgoing(an_item(g, f"Cosco {g} in Lima"), ("cosco",), rules)
                                 for g in ("a", "b", "c", "d")],
                    changed=[], status=200, etag=None, last_modified=None, feed_title="T",
                    now=NOW, next_poll_at=NOW + timedelta(minutes=10))
    lease = timedelta(minutes=1)
    stalled = store.claim_due_alerts(NOW, lease=lease)
    later = NOW + lease * 2  # the stalled pass's lease ran out
    taken = store.claim_due_alerts(later, lease=lease)
    assert [x.id for x in taken] == [x.id for x in stalled] and len(taken) == 4
    old, new = stalled[0].claim, taken[0].claim
    assert old != new and {x.claim for x in stalled} == {old}
    a, b, c, d = (x.id for x in taken)

    def state() -> dict[int, tuple[str, int, str | None, datetime | None]]:
        with Session(store.engine) as session:
            return {row.id: (row.status, row.attempts, row.claim, row.lease_until)
                    for row in session.scalars(select(Alert))}

    store.extend_lease([a, b, c, d], later + timedelta(hours=1), claim=old)
    store.release([a], claim=old)
    assert store.mark_failed([b], "timed out", later, later, claim=old) == []
    assert store.mark_dead([c], "refused", later, claim=old) == []
    assert state() == dict.fromkeys([a, b, c, d], ("sending", 0, new, later + lease))
    assert store.mark_sent([d], later) == [d]  # out: recorded, whoever holds it now
    assert state()[d][:3] == ("sent", 1, None)
    # The pass holding them now settles them as usual; a sent one stays sent.
    store.extend_lease([a, b, c, d], later + lease * 2, claim=new)
    assert state()[a] == ("sending", 0, new, later + lease * 2)
    store.release([a], claim=new)
    assert store.mark_failed([b], "timed out", later, later, claim=new) == [b]
    assert store.mark_dead([c], "refused", later, claim=new) == [c]
    assert store.mark_failed([d], "late", later, later, claim=new) == []
    assert state() == {a: ("pending", 0, None, None), b: ("failed", 1, None, None),
                       c: ("dead", 1, None, None), d: ("sent", 1, None, None)}
    store.close()


def test_alert_claims_stay_with_their_pass(tmp_path: Path) -> None:
    alert_claims_stay_with_their_pass(f"sqlite:///{tmp_path / 'm.db'}")


def test_the_same_story_alerts_once_per_destination_across_sources(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    store.sync_sources([("http://a/", "A", timedelta(minutes=10)),
                        ("http://b/", "B", timedelta(minutes=10))], NOW)
    a, b = store.sources()
    payload = {"slack": Planned([{"id": "r", "name": "R", "terms": []}])}
    kwargs = dict(changed=[], status=200, etag=None, last_modified=None, feed_title=None,
                  now=NOW, next_poll_at=NOW)
    item = an_item("same")
    assert store.save_poll(a, new=[Outgoing(item, ("r",), payload)], **kwargs).alerts == 1
    assert store.save_poll(b, new=[Outgoing(item, ("r",), payload)], **kwargs).alerts == 0
    store.close()
