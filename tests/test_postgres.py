"""The daemon on a real PostgreSQL server, when MONITOR_TEST_POSTGRES_URL names one.

The URL is an administrative connection (e.g. postgresql://postgres@127.0.0.1:5432/postgres);
each test creates its own database and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from conftest import FeedServer, SlackServer, Workspace, hours_ago, rss

ADMIN_URL = os.environ.get("MONITOR_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not ADMIN_URL, reason="MONITOR_TEST_POSTGRES_URL is not set")


@pytest.fixture
def database() -> Iterator[str]:
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(ADMIN_URL)
    name = f"monitor_test_{uuid.uuid4().hex[:12]}"
    conninfo = dict(host=admin.host, port=admin.port or 5432, user=admin.username,
                    password=admin.password, dbname=admin.database or "postgres")
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        # Written bare, as users write it: the app picks the driver.
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_once_per_story_on_postgresql(workspace: Workspace, feeds: FeedServer,
                                      slack: SlackServer, database: str) -> None:
    assert database.startswith("postgresql://")
    workspace.env.update(MONITOR_DATABASE_URL=database, MONITOR_SLACK_WEBHOOK_URL=slack.url)
    stories = [{"guid": "1", "title": "Cosco Shipping at Chancay port", "date": hours_ago(1),
                "link": "https://news.example/1"},
               {"guid": "2", "title": "Costco in Lima", "date": hours_ago(1)},
               {"guid": "3", "title": "Old: Cosco Shipping", "date": hours_ago(100)}]
    workspace.write_feeds(feeds.set("/a.xml", rss(stories)),
                          feeds.set("/b.xml", rss(stories[:1])))
    slack.respond((500, "rollup_error"))
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 1
    assert "Cosco Shipping at Chancay port" in slack.received[0]["blocks"][0]["text"]["text"]
    assert workspace.run("rules", "check").returncode == 0


def test_a_feed_with_an_absurd_etag_is_still_read_on_postgresql(
        workspace: Workspace, feeds: FeedServer, database: str) -> None:
    """Longer than the column holds (PostgreSQL enforces it): not kept, the feed is read."""
    workspace.env.update(MONITOR_DATABASE_URL=database)
    url = feeds.set("/etag.xml", rss([{"guid": "1", "title": "Chancay", "date": hours_ago(1)}]),
                    conditional=False, headers={"ETag": f'"{"e" * 600}"'})
    workspace.write_feeds(url)
    workspace.run("run", "--once", check=True)
    listing = workspace.run("sources", check=True).stdout
    line = next(l for l in listing.splitlines() if l.startswith("Feed 0"))
    assert " ok " in f" {line} " and " 1 " in f" {line} ", listing


def test_a_disabled_notice_is_claimed_once_on_postgresql(database: str) -> None:
    from test_polling import claim_disabled_notice_once

    claim_disabled_notice_once(database)



def test_alert_claims_stay_with_their_pass_on_postgresql(database: str) -> None:
    from test_store import alert_claims_stay_with_their_pass

    alert_claims_stay_with_their_pass(database)


# A host whose clock runs ahead of the database server's. (Not something this machine can
# arrange: the host's clock, as the store reads it, is what the tests move.)
AHEAD = timedelta(seconds=90)


def test_leases_follow_the_database_servers_clock_on_postgresql(database: str) -> None:
    from monitor.store import Store

    normal, fast = Store.open(database), Store.open(database)
    fast.local_clock = lambda: datetime.now(UTC) + AHEAD  # type: ignore[method-assign]
    try:
        assert abs(normal.measure_clock()) < timedelta(seconds=1)
        assert abs(fast.measure_clock() + AHEAD) < timedelta(seconds=1)
        assert abs(fast.clock() - normal.clock()) < timedelta(seconds=1)
        # NTP steps the fast host's clock by an hour: the time it goes by does not move.
        fast.local_clock = lambda: datetime.now(UTC) + AHEAD + timedelta(hours=1)  # type: ignore[method-assign]
        assert abs(fast.clock() - normal.clock()) < timedelta(seconds=1)
        fast.local_clock = lambda: datetime.now(UTC) + AHEAD  # type: ignore[method-assign]
        normal.sync_sources([(f"http://a.example/{n}", None, timedelta(minutes=10))
                             for n in range(3)], normal.clock())
        lease = timedelta(minutes=1)
        assert len(normal.claim_due_sources(normal.clock(), lease=lease, limit=10)) == 3
        # By the fast host's own clock the lease has run out; by the server's, not yet.
        assert fast.claim_due_sources(fast.clock(), lease=lease, limit=10) == []
        assert len(fast.claim_due_sources(fast.local_clock(), lease=lease, limit=10)) == 3
    finally:
        normal.close()
        fast.close()


def test_a_host_whose_clock_is_off_says_so_and_leases_by_the_servers_clock_on_postgresql(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer, database: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    from monitor.store import Store
    from test_polling import running

    def ahead() -> datetime:
        return datetime.now(UTC) + AHEAD

    for module in ("app", "pipeline"):
        monkeypatch.setattr(f"monitor.{module}.utcnow", ahead)
    monkeypatch.setattr(Store, "local_clock", staticmethod(ahead))
    story = {"guid": "1", "title": "Cosco Shipping at Chancay port", "date": hours_ago(1)}
    workspace.write_feeds(feeds.set("/slow.xml", rss([story]), delay=2))

    async def scenario() -> None:
        async with running(workspace, MONITOR_DATABASE_URL=database,
                           MONITOR_SLACK_WEBHOOK_URL=slack.url) as app:
            assert app.store is not None
            tick = asyncio.create_task(app.poll_due())
            while not feeds.requests:
                await asyncio.sleep(0.05)
            [source] = app.store.sources()
            assert source.leased_until is not None
            by_server = datetime.now(UTC) + app.settings.source_lease
            assert abs(source.leased_until - by_server) < timedelta(seconds=5)
            [report] = await tick
            assert report.alerts == 1
            delivered = await app.deliver()
            assert delivered.sent == 1
            # What it wrote is in the server's time too, not 90 s ahead.
            [alert] = app.store.alerts()
            assert abs(alert.created_at - datetime.now(UTC)) < timedelta(seconds=10)
            assert abs(alert.sent_at - datetime.now(UTC)) < timedelta(seconds=10)
            [source] = app.store.sources()
            assert abs(source.last_polled_at - datetime.now(UTC)) < timedelta(seconds=10)

    with capture_logs() as logged:
        asyncio.run(scenario())
    [warning] = [e for e in logged if "clock disagrees" in e["event"]]
    assert warning["log_level"] == "warning" and 89 < warning["host_ahead_s"] < 91
    assert len(slack.received) == 1
