"""The daemon on a real PostgreSQL server, when MONITOR_TEST_POSTGRES_URL names one.

The URL is an administrative connection (e.g. postgresql://postgres@127.0.0.1:5432/postgres);
each test creates its own database and drops it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

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
