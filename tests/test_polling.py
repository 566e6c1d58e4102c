"""Polling politely and cheaply: adaptive intervals, server hints, per-host limits, source
health with operator notices, `monitor sources`, skipping unchanged bodies, parsing in a worker
process, and source leases. Against the local feed server and real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import DataError, OperationalError

from conftest import FeedServer, SlackServer, Workspace, hours_ago, rss
from monitor.app import App
from monitor.cadence import Bounds, Hints, after_content, after_nothing_new, failure_backoff, \
    next_poll, publishing_interval
from monitor.errors import PermanentFetchError, TransientFetchError
from monitor.parse import FeedItems, read_feed
from monitor.settings import Settings, load_settings
from monitor.store import Store, Unchanged
from monitor import workers
from monitor.stories import Fingerprint
from monitor.workers import SEEN, FetchRequest, Fetching, _Worker, item_print

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
BOUNDS = Bounds(timedelta(minutes=5), timedelta(hours=1))


# How often a source is polled ----------------------------------------------------------------

def test_an_hourly_feed_is_polled_every_half_hour_a_busy_one_at_the_minimum() -> None:
    hourly = [NOW - timedelta(hours=h, minutes=10) for h in range(10)]
    assert publishing_interval(hourly, NOW, BOUNDS) == timedelta(minutes=30)
    wire = [NOW - timedelta(minutes=2 * m) for m in range(50)]
    assert publishing_interval(wire, NOW, BOUNDS) == BOUNDS.low


def test_a_feed_gone_quiet_is_polled_at_the_maximum_and_undated_feeds_keep_their_interval(
) -> None:
    burst_last_month = [NOW - timedelta(days=30, minutes=m) for m in range(20)]
    assert publishing_interval(burst_last_month, NOW, BOUNDS) == BOUNDS.high
    assert publishing_interval([None, None, NOW], NOW, BOUNDS) is None
    # A date in the future (a publisher's clock) is not believed.
    assert publishing_interval([NOW + timedelta(days=2), NOW], NOW, BOUNDS) is None
    assert after_content(timedelta(minutes=12), [None], NOW, BOUNDS) == timedelta(minutes=12)


def test_nothing_new_lengthens_the_interval_up_to_the_maximum() -> None:
    assert after_nothing_new(timedelta(minutes=8), BOUNDS) == timedelta(minutes=10)
    assert after_nothing_new(timedelta(minutes=55), BOUNDS) == BOUNDS.high


def test_jitter_spreads_polls_and_never_comes_before_what_the_server_asked() -> None:
    times = [next_poll(timedelta(minutes=10), NOW) for _ in range(200)]
    assert min(times) >= NOW + timedelta(minutes=9, seconds=30)
    assert max(times) <= NOW + timedelta(minutes=10, seconds=30)
    assert len(set(times)) > 150
    asked = Hints(ttl=timedelta(minutes=30), max_age=timedelta(minutes=20))
    hinted = [next_poll(timedelta(minutes=10), NOW, asked, cap=timedelta(hours=1))
              for _ in range(100)]
    assert min(hinted) >= NOW + timedelta(minutes=30)
    # A cache lifetime of a day is capped at the maximum interval.
    day = Hints(max_age=timedelta(days=1))
    assert next_poll(timedelta(minutes=10), NOW, day, cap=timedelta(hours=1)) <= \
        NOW + timedelta(hours=1, minutes=6)


def test_failures_back_off_exponentially_and_retry_after_is_honoured() -> None:
    delays = [failure_backoff(timedelta(minutes=10), n, NOW) - NOW for n in (1, 2, 3, 4)]
    for n, delay in enumerate(delays):
        assert timedelta(minutes=10 * 2 ** n) <= delay <= timedelta(minutes=11 * 2 ** n)
    assert failure_backoff(timedelta(minutes=10), 30, NOW) - NOW <= timedelta(hours=6.6)
    asked = failure_backoff(timedelta(minutes=1), 1, NOW, retry_after=7200) - NOW
    assert timedelta(hours=2) <= asked <= timedelta(hours=2.2)


# Against the local feed server ---------------------------------------------------------------

def app_for(workspace: Workspace, **env: str) -> App:
    values = {k.removeprefix("MONITOR_").lower(): v for k, v in
              {**workspace.env, **env}.items() if k.startswith("MONITOR_")}
    return App(load_settings(**values))


async def poll_once(app: App) -> list:  # type: ignore[type-arg]
    return await app.poll_due(every_source=True)


@contextlib.asynccontextmanager
async def running(workspace: Workspace, **env: str) -> AsyncIterator[App]:
    """An App on the workspace, started, and closed afterwards."""
    app = app_for(workspace, **env)
    await app.start()
    try:
        yield app
    finally:
        await app.close()


def poll_every_source(workspace: Workspace, **env: str) -> list:  # type: ignore[type-arg]
    async def scenario() -> list:  # type: ignore[type-arg]
        async with running(workspace, **env) as app:
            return await poll_once(app)
    return asyncio.run(scenario())


def source_row(workspace: Workspace, url: str):  # type: ignore[no-untyped-def]
    store = Store.open(workspace.env["MONITOR_DATABASE_URL"])
    try:
        return next(s for s in store.sources(include_disabled=True) if s.url == url)
    finally:
        store.close()


def dated_items(count: int, every: timedelta) -> list[dict]:
    return [{"guid": f"g{n}", "title": f"Port story number {n}",
             "link": f"https://news.example/{n}", "date": hours_ago(0) - every * (n + 1)}
            for n in range(count)]


def test_intervals_adapt_and_follow_ttl_max_age_and_retry_after(
        workspace: Workspace, feeds: FeedServer) -> None:
    busy = feeds.set("/busy.xml", rss(dated_items(10, timedelta(minutes=20))))
    ttl = feeds.set("/ttl.xml", rss(dated_items(10, timedelta(minutes=20)),
                                    extra="<ttl>45</ttl>"))
    cached = feeds.set("/cached.xml", rss(dated_items(10, timedelta(minutes=20))),
                       headers={"Cache-Control": "public, max-age=2400"})
    limited = feeds.set("/limited.xml", b"slow down", status=429,
                        headers={"Retry-After": "5400"})
    unavailable = feeds.set("/down.xml", b"", status=503, headers={"Retry-After": "600"})
    pinned = feeds.set("/pinned.xml", rss(dated_items(10, timedelta(days=3))))
    workspace.write_feeds(busy, ttl, cached, limited, unavailable)
    with (workspace.rules / "feeds.yaml").open("a", encoding="utf-8") as f:
        f.write(f"  - url: {pinned}\n    name: Pinned\n    interval: 7m\n")

    started = datetime.now(UTC)
    poll_every_source(workspace)

    def wait(url: str) -> timedelta:
        return source_row(workspace, url).next_poll_at - started

    # Items every 20 minutes: polled every 10, give or take the jitter.
    assert timedelta(minutes=9) <= wait(busy) <= timedelta(minutes=11)
    assert source_row(workspace, busy).current_interval == timedelta(minutes=10)
    assert timedelta(minutes=45) <= wait(ttl) <= timedelta(minutes=50)
    assert timedelta(minutes=40) <= wait(cached) <= timedelta(minutes=45)
    assert timedelta(minutes=90) <= wait(limited) <= timedelta(minutes=100)
    assert timedelta(minutes=10) <= wait(unavailable) <= timedelta(minutes=12)
    # An interval set in feeds.yaml is kept, however rarely the feed publishes.
    assert timedelta(minutes=6.5) <= wait(pinned) <= timedelta(minutes=7.5)
    assert source_row(workspace, pinned).current_interval is None


def test_fetches_to_one_host_are_limited(workspace: Workspace, feeds: FeedServer) -> None:
    urls = [feeds.set(f"/slow{n}.xml", rss(dated_items(2, timedelta(hours=1))), delay=0.3)
            for n in range(8)]
    workspace.write_feeds(*urls)

    poll_every_source(workspace, MONITOR_FETCH_CONCURRENCY="8", MONITOR_FETCH_PER_HOST="2")
    assert feeds.hits("/slow0.xml") == 1 and len(feeds.requests) == 8
    assert feeds.peak == 2


def test_a_body_that_has_not_changed_is_not_parsed_again(
        workspace: Workspace, feeds: FeedServer) -> None:
    # A server that ignores conditional GET: no ETag, no Last-Modified, 200 every time.
    url = feeds.set("/same.xml", rss(dated_items(3, timedelta(hours=1))), conditional=False)
    workspace.write_feeds(url)
    reads: list[str] = []

    class Counting(Fetching):
        async def read(self, body: bytes, *, url: str,
                       content_type: str | None) -> tuple[FeedItems, tuple]:
            reads.append(url)
            return await super().read(body, url=url, content_type=content_type)

    async def scenario() -> None:
        async with running(workspace) as app:
            app.poller.fetching = Counting(app.settings, 0)
            first = await poll_once(app)
            second = await poll_once(app)
            assert [r.status for r in first + second] == [200, 200]
            assert first[0].new == 3 and second[0].new == 0
            assert len(reads) == 1
            feeds.set("/same.xml", rss(dated_items(4, timedelta(hours=1))), conditional=False)
            third = await poll_once(app)
            assert third[0].new == 1 and len(reads) == 2
    asyncio.run(scenario())
    assert source_row(workspace, url).last_item_count == 4


@pytest.mark.parametrize("processes", [0, 1], ids=["in-process", "worker"])
def test_only_items_the_reader_has_not_seen_in_the_feed_are_fingerprinted(
        feeds: FeedServer, processes: int) -> None:
    url = feeds.set("/seen.xml", rss(dated_items(3, timedelta(hours=1))))
    other = feeds.set("/other.xml", rss(dated_items(3, timedelta(hours=1))))

    async def scenario() -> None:
        fetching = Fetching(load_settings(_env_file=None), processes)
        try:
            first = await fetching.fetch(FetchRequest(url))
            assert all(isinstance(p, Fingerprint) for p in first.prints)
            feeds.set("/seen.xml", rss(dated_items(4, timedelta(hours=1))))
            second = await fetching.fetch(FetchRequest(url))
            assert second.read is not None
            prints = {i.guid: p for i, p in zip(second.read.items, second.prints, strict=True)}
            assert [g for g, p in prints.items() if p is SEEN] == ["g0", "g1", "g2"]
            new = next(i for i in second.read.items if i.guid == "g3")
            assert isinstance(prints["g3"], Fingerprint)
            assert prints["g3"].signature == item_print(new).signature
            # What one feed held says nothing about another with the same items.
            elsewhere = await fetching.fetch(FetchRequest(other))
            assert all(isinstance(p, Fingerprint) for p in elsewhere.prints)
        finally:
            await fetching.aclose()
    asyncio.run(scenario())


def test_a_new_item_the_reader_skipped_as_seen_is_fingerprinted_by_the_daemon(
        workspace: Workspace, feeds: FeedServer) -> None:
    """The poll that first read the feed was not saved: the reader saw its items, the store
    did not. The next poll's items are new, and the daemon fingerprints them itself."""
    body = rss(dated_items(3, timedelta(hours=1)))
    url = feeds.set("/unsaved.xml", body)
    workspace.write_feeds(url)

    async def scenario() -> None:
        async with running(workspace) as app:
            save_poll = app.store.save_poll
            calls = []

            def failing_once(*args: object, **kwargs: object) -> object:
                calls.append(kwargs)
                if len(calls) == 1:
                    raise RuntimeError("database is locked")
                return save_poll(*args, **kwargs)

            app.store.save_poll = failing_once  # type: ignore[method-assign]
            first = await poll_once(app)
            assert first[0].error is not None and "database is locked" in first[0].error
            assert all(out.fingerprint is not None for out in calls[0]["new"])
            second = await poll_once(app)
            assert second[0].new == 3, second
            skipped = calls[1]["new"]
            assert len(skipped) == 3
            assert all(isinstance(out.fingerprint, Fingerprint) for out in skipped)
    asyncio.run(scenario())
    expected = {i.guid: item_print(i).signature
                for i in read_feed(body, url=url, content_type="application/rss+xml").items}
    store = Store.open(workspace.env["MONITOR_DATABASE_URL"])
    try:
        stored = {item.guid: item.fingerprint for item, _ in store.items_since(hours_ago(1))}
    finally:
        store.close()
    assert stored == expected


def test_feeds_are_fetched_and_read_in_a_worker_process_which_is_replaced_if_it_dies(
        feeds: FeedServer) -> None:
    feed = feeds.set("/worker.xml", rss(dated_items(3, timedelta(hours=1)), title="Worker feed"))
    slow = feeds.set("/slow.xml", rss(dated_items(1, timedelta(hours=1))), delay=3.0)
    page = feeds.set("/page.html", b"<html><body>hi</body></html>",
                     content_type="text/html")
    settings = load_settings(_env_file=None, fetch_timeout="10s")

    async def scenario() -> None:
        fetching = Fetching(settings, 1)
        try:
            fetched = await fetching.fetch(FetchRequest(feed))
            assert fetched.result.status == 200 and fetched.result.body is None
            assert fetched.read is not None and fetched.read.feed.title == "Worker feed"
            assert [i.title for i in fetched.read.items][0] == "Port story number 0"
            assert len(fetched.prints) == 3 and all(p is not None for p in fetched.prints)
            worker = fetching._workers[0]
            assert worker is not None and worker.process.pid != os.getpid()
            # The same body again (a server ignoring conditional GET) is not read again.
            again = await fetching.fetch(FetchRequest(feed, body_hash=fetched.body_hash))
            assert again.result.status == 200 and again.read is None
            # Stopping the daemon's process group does not stop a worker; only the daemon does.
            os.kill(worker.process.pid, signal.SIGTERM)
            assert (await fetching.fetch(FetchRequest(feed))).read is not None
            # Killed with a fetch under way: that fetch fails, the next one gets a new worker.
            waiting = asyncio.create_task(fetching.fetch(FetchRequest(slow)))
            await asyncio.sleep(1.0)
            os.kill(worker.process.pid, signal.SIGKILL)
            with pytest.raises(TransientFetchError, match="process died"):
                await waiting
            assert len((await fetching.fetch(FetchRequest(feed))).read.items) == 3
            assert fetching._workers[0] is not worker
            # A page that is not a feed is still a clear error from the worker.
            with pytest.raises(PermanentFetchError, match="not a feed"):
                await fetching.fetch(FetchRequest(page))
        finally:
            await fetching.aclose()
        assert worker.process.poll() is not None
    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def one_worker(settings: Settings, feed: str) -> AsyncIterator[tuple[Fetching, _Worker]]:
    """Fetching with one worker process, started by a first fetch of `feed`."""
    fetching = Fetching(settings, 1)
    try:
        assert (await fetching.fetch(FetchRequest(feed))).read is not None
        worker = fetching._workers[0]
        assert worker is not None
        yield fetching, worker
    finally:
        await fetching.aclose()


def test_a_hung_worker_is_replaced_and_only_the_feed_it_hung_on_fails(
        feeds: FeedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that stops answering (here: stopped with SIGSTOP) is killed once a fetch has
    waited its time limit and the reading allowance; that fetch fails, and the other fetch
    it held is asked again of the new worker and succeeds."""
    monkeypatch.setattr(workers, "READING_ALLOWANCE", 1.0)
    feed = feeds.set("/hung.xml", rss(dated_items(2, timedelta(hours=1)), title="Hung"))
    settings = load_settings(_env_file=None, fetch_timeout="3s")  # hung after 4 s

    async def scenario() -> None:
        async with one_worker(settings, feed) as (fetching, worker):
            os.kill(worker.process.pid, signal.SIGSTOP)
            hung = asyncio.create_task(fetching.fetch(FetchRequest(feed)))
            await asyncio.sleep(1.0)
            bystander = asyncio.create_task(fetching.fetch(FetchRequest(feed)))
            with pytest.raises(TransientFetchError, match="hung while reading this feed"):
                await hung
            fetched = await bystander
            assert fetched.read is not None and fetched.read.feed.title == "Hung"
            assert fetching._workers[0] is not worker and worker.process.poll() is not None
    asyncio.run(scenario())


def test_an_answer_the_daemon_cannot_read_fails_only_its_fetch(feeds: FeedServer) -> None:
    slow = feeds.set("/slow-answer.xml", rss(dated_items(1, timedelta(hours=1))), delay=1.0)
    feed = feeds.set("/fine.xml", rss(dated_items(2, timedelta(hours=1)), title="Fine"))
    settings = load_settings(_env_file=None, fetch_timeout="10s")

    async def scenario() -> None:
        async with one_worker(settings, feed) as (fetching, worker):
            waiting = asyncio.create_task(fetching.fetch(FetchRequest(slow)))
            await asyncio.sleep(0.3)
            [request_id] = worker.pending
            worker._answer(request_id, True, b"not a pickle")  # as if it came down the pipe
            with pytest.raises(TransientFetchError, match="cannot read the worker's answer"):
                await waiting
            await asyncio.sleep(1.0)  # the real answer arrives, for nobody, and is dropped
            assert (await fetching.fetch(FetchRequest(feed))).read.feed.title == "Fine"
            assert fetching._workers[0] is worker and worker.alive
    asyncio.run(scenario())


# Source health --------------------------------------------------------------------------------

def test_a_gone_feed_is_disabled_reported_once_and_can_be_enabled_again(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    gone = feeds.set("/gone.xml", b"gone <b>for good</b>", status=410)
    fine = feeds.set("/fine.xml", rss(dated_items(1, timedelta(hours=30))))
    workspace.write_feeds(gone, fine)
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    assert feeds.hits("/gone.xml") == 1  # not polled again
    notices = [p for p in slack.received if "Source disabled" in p["text"]]
    assert len(notices) == 1
    assert "/gone.xml" in str(notices[0]["blocks"])
    listing = workspace.run("sources", check=True).stdout
    line = next(l for l in listing.splitlines() if l.startswith("Feed 0"))
    assert "disabled" in line and "410" in line
    assert "ok" in next(l for l in listing.splitlines() if l.startswith("Feed 1"))
    assert "Feed 1" not in workspace.run("sources", "--failing", check=True).stdout
    # Fixed at the source: the operator enables it and it is polled again.
    feeds.set("/gone.xml", rss(dated_items(1, timedelta(hours=30))))
    assert workspace.run("sources", "enable", gone, check=True).returncode == 0
    workspace.run("run", "--once", check=True)
    assert feeds.hits("/gone.xml") == 2
    assert "disabled" not in workspace.run("sources", check=True).stdout
    unknown = workspace.run("sources", "enable", "http://nowhere.example/feed")
    assert unknown.returncode != 0 and "no source" in unknown.stderr


def test_a_long_failure_is_reported_once_and_its_recovery_once(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env.update(MONITOR_SLACK_WEBHOOK_URL=slack.url,
                         MONITOR_SOURCE_ALERT_AFTER="0.01s")
    url = feeds.set("/flaky.xml", b"<oops", status=500)
    workspace.write_feeds(url)
    for _ in range(3):
        workspace.run("run", "--once", check=True)
    failing = [p for p in slack.received if "Source failing" in p["text"]]
    assert len(failing) == 1
    assert "HTTP 500" in str(failing[0]["blocks"])
    row = source_row(workspace, url)
    assert row.consecutive_failures == 3 and row.failing_since is not None
    feeds.set("/flaky.xml", rss(dated_items(1, timedelta(hours=30))))
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    recovered = [p for p in slack.received if "Source recovered" in p["text"]]
    assert len(recovered) == 1
    row = source_row(workspace, url)
    assert row.failing_since is None and row.failure_noticed_at is None
    assert row.consecutive_failures == 0


def test_a_notice_nobody_could_take_is_tried_again(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env.update(MONITOR_SLACK_WEBHOOK_URL=slack.url,
                         MONITOR_SOURCE_ALERT_AFTER="0.01s")
    workspace.write_feeds(feeds.set("/down.xml", b"", status=502))
    workspace.run("run", "--once", check=True)  # the first failure starts the streak
    slack.respond((500, "oops"))
    workspace.run("run", "--once", check=True)
    assert len(slack.attempts) == 1 and not slack.received
    workspace.run("run", "--once", check=True)
    assert len([p for p in slack.received if "Source failing" in p["text"]]) == 1
    workspace.run("run", "--once", check=True)
    assert len(slack.attempts) == 2


def database_locked(*args: object, **kwargs: object) -> None:
    """A store call as it fails while the database is locked past its busy timeout."""
    raise OperationalError("UPDATE …", {}, sqlite3.OperationalError("database is locked"))


def test_a_database_error_while_saving_a_poll_is_not_held_against_the_feed(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env.update(MONITOR_SLACK_WEBHOOK_URL=slack.url,
                         MONITOR_SOURCE_ALERT_AFTER="0.01s")
    url = feeds.set("/fine.xml", rss(dated_items(3, timedelta(hours=1))))
    workspace.write_feeds(url)

    async def scenario() -> None:
        async with running(workspace) as app:
            save_poll = app.store.save_poll
            app.store.save_poll = database_locked  # type: ignore[method-assign]
            for _ in range(2):
                [report] = await poll_once(app)
                assert report.error is not None and report.error.startswith(
                    "database: OperationalError") and "locked" in report.error
            [row] = await asyncio.to_thread(app.store.sources)
            assert (row.consecutive_failures, row.failing_since, row.last_error) == \
                (0, None, None)

            def refused(*args: object, **kwargs: object) -> None:
                raise DataError("UPDATE sources …", {}, ValueError("value too long"))

            # A statement the database refuses is not an outage: it counts against the feed.
            app.store.save_poll = refused  # type: ignore[method-assign]
            [report] = await poll_once(app)
            assert report.error is not None and "unexpected DataError" in report.error
            [row] = await asyncio.to_thread(app.store.sources)
            assert row.consecutive_failures == 1
            app.store.save_poll = save_poll  # type: ignore[method-assign]
            [report] = await poll_once(app)
            assert report.new == 3 and report.error is None
    asyncio.run(scenario())
    # No "Source failing" notice blamed the feed for the outage (the refusal came once).
    assert not slack.received


def test_a_poll_the_database_could_not_save_is_taken_again_once_its_lease_runs_out(
        workspace: Workspace, feeds: FeedServer) -> None:
    workspace.env.update(MONITOR_SOURCE_LEASE="3s", MONITOR_FETCH_TIMEOUT="2s")
    url = feeds.set("/fine.xml", rss(dated_items(3, timedelta(hours=1))))
    workspace.write_feeds(url)

    async def scenario() -> None:
        async with running(workspace) as app:
            save_poll = app.store.save_poll
            app.store.save_poll = database_locked  # type: ignore[method-assign]
            [report] = await app.poll_due()  # as the daemon's tick: the source is leased
            assert report.error is not None and "locked" in report.error
            app.store.save_poll = save_poll  # type: ignore[method-assign]
            assert await app.poll_due() == []  # still leased: not taken again yet
            await asyncio.sleep(3.2)
            [report] = await app.poll_due()
            assert report.new == 3 and report.error is None
    asyncio.run(scenario())
    assert feeds.hits("/fine.xml") == 2


def test_a_disabled_source_s_notice_nobody_could_take_is_tried_again(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    """A disabled source is never polled again, so its notice is tried again on its own."""
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    gone = feeds.set("/gone.xml", b"gone", status=410)
    workspace.write_feeds(gone)
    slack.respond((500, "oops"))
    workspace.run("run", "--once", check=True)
    assert len(slack.attempts) == 1 and not slack.received
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    assert feeds.hits("/gone.xml") == 1
    assert len(slack.attempts) == 2
    [notice] = slack.received
    assert "Source disabled" in notice["text"] and "410" in str(notice["blocks"])
    assert source_row(workspace, gone).notice_pending is None  # sent, and recorded so


def owe_a_disabled_notice(workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    """A run in which one source is disabled (410) and its notice refused: it is owed; the
    other source is fine."""
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    workspace.write_feeds(feeds.set("/gone.xml", b"gone", status=410),
                          feeds.set("/fine.xml", rss(dated_items(1, timedelta(hours=1)))))
    slack.respond((500, "oops"))
    workspace.run("run", "--once", check=True)


def test_owed_notices_are_tried_in_the_background_and_given_back_when_stopping(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    owe_a_disabled_notice(workspace, feeds, slack)
    slack.delay = 3.0  # the operator's channel hangs

    def owed() -> list[str]:
        store = Store.open(workspace.env["MONITOR_DATABASE_URL"])
        try:
            return [o.source.url for o in store.owing_notices(datetime.now(UTC))]
        finally:
            store.close()

    async def scenario(stop_early: bool) -> None:
        async with running(workspace) as app:
            started = time.monotonic()
            reports = await app.poll_due(every_source=True)
            assert time.monotonic() - started < 2.0  # not held up by the notice
            assert [r.status for r in reports] == [304]
            assert app._owed is not None
            if stop_early:  # stopping while the notice is on its way: it stays owed
                await asyncio.sleep(0.5)
                return
            await app._owed
    asyncio.run(scenario(stop_early=True))
    assert [u.rsplit("/", 1)[1] for u in owed()] == ["gone.xml"]
    asyncio.run(scenario(stop_early=False))
    assert owed() == []
    time.sleep(3.5)  # the request given up on when stopping is answered meanwhile
    notices = [p for p in slack.received if "Source disabled" in p["text"]]
    assert 1 <= len(notices) <= 2  # the one given up on may have been posted too


def failing_notice_whose_sender_died(workspace: Workspace, feeds: FeedServer,
                                     slack: SlackServer, **env: str) -> str:
    """A failing feed (not yet for long enough to tell) whose "failing" notice another
    instance claimed 15 minutes ago, dying before it sent it. Returns the feed's URL."""
    workspace.env.update(MONITOR_SLACK_WEBHOOK_URL=slack.url, **env)
    url = feeds.set("/broken.xml", b"oops", status=500)
    workspace.write_feeds(url)
    workspace.run("run", "--once", check=True)
    store = Store.open(workspace.env["MONITOR_DATABASE_URL"])
    try:
        [source] = store.sources()
        assert store.take_notice(source.id, "failing", datetime.now(UTC) - timedelta(minutes=15),
                                 lease=App.NOTICE_LEASE)
    finally:
        store.close()
    return url


def test_a_notice_whose_sender_died_before_sending_it_is_sent_once_by_another(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    url = failing_notice_whose_sender_died(workspace, feeds, slack)
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    [notice] = slack.received
    assert "Source failing" in notice["text"]
    # The failures recorded when it was read: the second run's, or not yet.
    assert re.search(r"\((1 poll|2 polls)\): HTTP 500", str(notice["blocks"]))
    assert source_row(workspace, url).notice_pending is None
    assert feeds.hits("/broken.xml") == 3


def test_a_notice_sent_again_is_recorded_as_sent_when_stopping_after_a_destination_took_it(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    url = failing_notice_whose_sender_died(workspace, feeds, slack,
                                           MONITOR_OPERATOR_DESTINATIONS="console,slack")
    slack.delay = 3.0

    async def scenario() -> None:
        async with running(workspace) as app:
            await app.poll_due(every_source=True)
            await asyncio.sleep(1.0)  # the console has the notice; Slack has not answered
            assert app._owed is not None and not app._owed.done()
        # Stopped meanwhile: one destination took it, so it is not owed any more.
    asyncio.run(scenario())
    assert source_row(workspace, url).notice_pending is None


def test_a_notice_owed_that_cannot_be_claimed_does_not_stop_polling(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    owe_a_disabled_notice(workspace, feeds, slack)

    async def scenario() -> None:
        async with running(workspace) as app:
            app.store.take_notice = database_locked  # type: ignore[method-assign]
            reports = await app.poll_due(every_source=True)
            assert [r.status for r in reports] == [304]
            assert app._owed is not None
            await app._owed  # logged, not raised
    asyncio.run(scenario())
    assert not slack.received


def test_a_claim_the_source_no_longer_calls_for_is_not_sent_late(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'notices.db'}")
    lease = timedelta(minutes=10)
    store.sync_sources([("https://flaky.example/feed", "Flaky", timedelta(minutes=10))], NOW)
    [source] = store.sources()
    store.record_failure(source.id, status=500, error="HTTP 500", now=NOW, next_poll_at=NOW)
    assert store.take_notice(source.id, "failing", NOW, lease=lease)  # and its sender dies
    after = NOW + lease + timedelta(seconds=1)
    assert [(o.kind, o.resend) for o in store.owing_notices(after)] == [("failing", True)]
    # A give-back of another kind (a "recovered" claim undone) leaves this claim alone.
    store.give_back_notice(source.id, "recovered", NOW)
    assert [(o.kind, o.resend) for o in store.owing_notices(after)] == [("failing", True)]
    # The source works again before anyone sent it: a "failing" notice now would be wrong.
    store.record_unchanged([Unchanged(source.id, 304, None, None, after)], after)
    assert store.owing_notices(after) == []
    assert not store.retake_notice(source.id, "failing", after, lease=lease)
    store.close()


def test_a_source_s_disabled_notice_is_claimed_once_even_after_a_failing_notice(
        tmp_path: Path) -> None:
    claim_disabled_notice_once(f"sqlite:///{tmp_path / 'notices.db'}")


def claim_disabled_notice_once(url: str) -> None:
    """Instances that see the same 410 send one notice between them; a notice given back
    is owed until one is sent; one whose sender died before saying it went out is claimed
    again, by one instance, once its claim has run out. (Run on PostgreSQL too:
    test_postgres.py.)"""
    one, two = Store.open(url), Store.open(url)
    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    lease = timedelta(minutes=10)
    one.sync_sources([("https://gone.example/feed", "Gone", timedelta(minutes=10))], now)
    [source] = one.sources()
    one.record_failure(source.id, status=500, error="HTTP 500", now=now, next_poll_at=now)
    assert one.take_notice(source.id, "failing", now, lease=lease)
    one.notice_sent(source.id, "failing")
    later = now + timedelta(hours=2)
    one.record_failure(source.id, status=410, error="HTTP 410", now=later, next_poll_at=later,
                       disable=True)
    assert [o.source.id for o in one.owing_notices(later)] == [source.id]
    # The second instance's clock is behind: its claim still counts as after the disabling.
    assert two.take_notice(source.id, "disabled", later - timedelta(seconds=30), lease=lease)
    assert not one.take_notice(source.id, "disabled", later + timedelta(seconds=1), lease=lease)
    assert one.owing_notices(later + timedelta(seconds=1)) == []
    two.give_back_notice(source.id, "disabled", now)  # no destination took it
    assert [o.source.id for o in one.owing_notices(later)] == [source.id]
    claimed = later + timedelta(minutes=10)
    assert one.take_notice(source.id, "disabled", claimed, lease=lease)
    assert not two.take_notice(source.id, "disabled", claimed + timedelta(minutes=1),
                               lease=lease)
    # The first instance dies before saying the notice went out: while its claim holds,
    # nothing is owed; then one of the others claims the notice again.
    assert one.owing_notices(claimed + lease - timedelta(seconds=1)) == []
    after = claimed + lease + timedelta(seconds=1)
    [owed] = two.owing_notices(after)
    assert (owed.source.id, owed.kind, owed.resend) == (source.id, "disabled", True)
    assert not two.retake_notice(source.id, "failing", after, lease=lease)
    assert two.retake_notice(source.id, "disabled", after, lease=lease)
    assert not one.retake_notice(source.id, "disabled", after, lease=lease)
    assert two.owing_notices(after + lease - timedelta(seconds=1)) == []
    two.notice_sent(source.id, "disabled")
    assert two.owing_notices(after + timedelta(days=1)) == []
    one.close()
    two.close()


def test_settings_that_cannot_work_are_refused() -> None:
    from monitor.errors import ConfigError
    with pytest.raises(ConfigError, match="MONITOR_OPERATOR_DESTINATIONS"):
        load_settings(operator_destinations="pager")
    with pytest.raises(ConfigError, match="MONITOR_SOURCE_LEASE must be longer"):
        load_settings(source_lease="20s", fetch_timeout="30s")
    with pytest.raises(ConfigError, match="MONITOR_POLL_MIN_INTERVAL"):
        load_settings(poll_min_interval="2h", poll_max_interval="1h")
    assert load_settings(operator_destinations="console").operator_destinations == ["console"]


# Leases ---------------------------------------------------------------------------------------

def test_a_claimed_source_is_not_due_for_anyone_else_until_its_lease_runs_out(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lease.db'}"
    one, two = Store.open(url), Store.open(url)
    try:
        one.sync_sources([(f"http://a.example/{n}", None, timedelta(minutes=10))
                          for n in range(5)], NOW)
        taken = one.claim_due_sources(NOW, lease=timedelta(minutes=1), limit=3)
        assert [s.url for s in taken] == [f"http://a.example/{n}" for n in range(3)]
        rest = two.claim_due_sources(NOW, lease=timedelta(minutes=1), limit=10)
        assert [s.url for s in rest] == ["http://a.example/3", "http://a.example/4"]
        assert two.claim_due_sources(NOW + timedelta(seconds=59), lease=timedelta(minutes=1),
                                     limit=10) == []
        # A lease renewed by its holder holds; another instance cannot renew it.
        one.renew_source_leases([s.id for s in taken], NOW + timedelta(minutes=2))
        two.renew_source_leases([s.id for s in taken], NOW + timedelta(minutes=5))
        again = two.claim_due_sources(NOW + timedelta(seconds=61), lease=timedelta(minutes=1),
                                      limit=10)
        assert [s.url for s in again] == ["http://a.example/3", "http://a.example/4"]
        # Nobody recorded a poll: the leases ran out and the sources are due again.
        again = two.claim_due_sources(NOW + timedelta(minutes=3), lease=timedelta(minutes=1),
                                      limit=10)
        assert len(again) == 5
        assert {s.leased_until for s in two.sources()} == {NOW + timedelta(minutes=4)}
    finally:
        one.close()
        two.close()


def test_sources_taken_but_not_polled_are_given_back_when_the_tick_is_cancelled(
        workspace: Workspace, feeds: FeedServer) -> None:
    slow = [feeds.set(f"/hang{n}.xml", rss(dated_items(1, timedelta(hours=1))), delay=5)
            for n in range(10)]
    workspace.write_feeds(*slow)

    async def scenario() -> None:
        async with running(workspace, MONITOR_FETCH_CONCURRENCY="2",
                           MONITOR_FETCH_PER_HOST="2") as app:
            tick = asyncio.create_task(app.poll_due())
            while len(feeds.requests) < 2:
                await asyncio.sleep(0.05)
            assert app.store is not None
            now = datetime.now(UTC)
            leased = [s for s in app.store.sources() if s.leased_until and s.leased_until > now]
            # Four per fetch slot taken: two being fetched, six waiting; two left for others.
            assert len(leased) == 8
            listing = (await asyncio.to_thread(workspace.run, "sources", check=True)).stdout
            assert [line.split()[-1] for line in listing.splitlines()
                    if line.startswith("Feed ")].count("polling") == 8, listing
            tick.cancel()
            with pytest.raises(asyncio.CancelledError):
                await tick
            assert all(s.leased_until is None for s in app.store.sources())
            assert len(app.store.claim_due_sources(datetime.now(UTC), limit=20,
                                                   lease=timedelta(minutes=1))) == 10
            # And a daemon that is stopping takes no more.
            app.stopping = True
            assert await app.poll_due() == []
    asyncio.run(scenario())


def test_a_source_waiting_behind_a_slow_host_keeps_its_lease_and_is_fetched_once(
        workspace: Workspace, feeds: FeedServer) -> None:
    # One fetch at a time to this host, each taking 1 s, and a lease of 3 s: the last
    # sources wait far longer than the lease, which their instance keeps renewing.
    urls = [feeds.set(f"/queue{n}.xml", rss(dated_items(1, timedelta(hours=1))), delay=1.0)
            for n in range(6)]
    workspace.write_feeds(*urls)

    async def scenario() -> None:
        async with running(workspace, MONITOR_FETCH_CONCURRENCY="4", MONITOR_FETCH_PER_HOST="1",
                           MONITOR_FETCH_TIMEOUT="2s", MONITOR_SOURCE_LEASE="3s") as app:
            # Another instance's view of the database, meanwhile.
            other = Store.open(workspace.env["MONITOR_DATABASE_URL"])
            tick = asyncio.create_task(app.poll_due())
            stolen = []
            while not tick.done():
                await asyncio.sleep(0.5)
                stolen += await asyncio.to_thread(
                    other.claim_due_sources, datetime.now(UTC), lease=timedelta(seconds=3),
                    limit=10)
            other.close()
            reports = await tick
            assert stolen == []
            assert sorted(r.status for r in reports) == [200] * 6
    asyncio.run(scenario())
    assert sorted(p for p, _ in feeds.requests) == sorted(f"/queue{n}.xml" for n in range(6))


def test_a_busy_host_does_not_hold_up_another(workspace: Workspace, feeds: FeedServer) -> None:
    # The feed server under two names: "127.0.0.1", slow, and "localhost", prompt.
    slow = [feeds.set(f"/busy{n}.xml", rss(dated_items(1, timedelta(hours=1))), delay=1.0)
            for n in range(4)]
    prompt = feeds.set("/prompt.xml", rss(dated_items(1, timedelta(hours=1))))
    workspace.write_feeds(*slow, prompt.replace("127.0.0.1", "localhost"))

    poll_every_source(workspace, MONITOR_FETCH_CONCURRENCY="3", MONITOR_FETCH_PER_HOST="1")
    when = {p: t for (p, _), t in zip(feeds.requests, feeds.request_times)}
    # The prompt host was fetched at once, while the busy one's feeds waited for it one by
    # one (without holding the slots the prompt one needed).
    assert when["/prompt.xml"] - min(when.values()) < 0.5
    assert max(when.values()) - min(when.values()) >= 3.0


def test_rss_ttl_still_holds_after_a_304(workspace: Workspace, feeds: FeedServer) -> None:
    url = feeds.set("/ttl304.xml", rss(dated_items(10, timedelta(minutes=20)),
                                       extra="<ttl>50</ttl>"))
    workspace.write_feeds(url)

    async def scenario() -> None:
        async with running(workspace) as app:
            first = await poll_once(app)
            second = await poll_once(app)
            assert [r.status for r in first + second] == [200, 304]
    started = datetime.now(UTC)
    asyncio.run(scenario())
    row = source_row(workspace, url)
    assert row.ttl == timedelta(minutes=50)
    assert row.next_poll_at - started >= timedelta(minutes=50)
