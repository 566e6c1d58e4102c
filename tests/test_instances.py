"""Several `monitor run` processes on one PostgreSQL database (MONITOR_TEST_POSTGRES_URL).

Sources are leased with `SELECT … FOR UPDATE SKIP LOCKED`, alerts are claimed the same way and
kept unique by the database: every alert arrives exactly once, however the instances share the
work, and a source held by an instance that is killed is polled by another once its lease runs
out. The alerts go to a JSON webhook (the local Slack double, which records every POST), one
payload per alert or per group, so counting titles across payloads counts deliveries.
"""

from __future__ import annotations

import collections
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FeedServer, SlackServer, Workspace, hours_ago, rss
from test_postgres import ADMIN_URL, database  # noqa: F401  (a fixture)

pytestmark = pytest.mark.skipif(not ADMIN_URL, reason="MONITOR_TEST_POSTGRES_URL is not set")

FEEDS = 300
LEASE = 3.0  # seconds: MONITOR_SOURCE_LEASE in these tests
KILL_LEASE = 8.0  # … in the test that kills an instance (its fetches take 5 s to time out)


def headline(n: int) -> str:
    """A headline the watch list matches (Chancay) that no other one resembles: the rest is
    made-up words, so story grouping keeps every feed's item a story of its own."""
    rng = random.Random(n)
    words = ["".join(rng.choice("bcdfghjklmnprstvz") + rng.choice("aeiou") for _ in range(3))
             for _ in range(10)]
    return f"Chancay port {n}: " + " ".join(words)


def serve(feeds: FeedServer, *, delay: float = 0.0) -> list[str]:
    urls = []
    for n in range(FEEDS):
        item = {"guid": f"item-{n}", "title": headline(n), "date": hours_ago(1),
                "link": f"https://news.example/{n}",
                "description": " ".join(headline(n + 10_000).split()[3:])}
        urls.append(feeds.set(f"/feed/{n:03d}.xml", rss([item], title=f"Feed {n}"),
                              delay=delay))
    return urls


def start(workspace: Workspace, name: str, log_dir: Path, **env: str) -> subprocess.Popen:
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen([sys.executable, "-m", "monitor", "run"], cwd=workspace.root,
                            env={**workspace.env, "MONITOR_USER_AGENT": f"monitor-test/{name}",
                                 **env},
                            stdout=log, stderr=subprocess.STDOUT)


def stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def delivered(hook: SlackServer) -> collections.Counter[str]:
    with hook.lock:
        payloads = list(hook.received)
    return collections.Counter(a["title"] for p in payloads for a in p["alerts"])


def wait_for(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def setup(workspace: Workspace, slack: SlackServer, database: str) -> Workspace:  # noqa: F811
    workspace.env.update(
        MONITOR_DATABASE_URL=database, MONITOR_LOG_LEVEL="INFO",
        MONITOR_DESTINATIONS__HOOK__TYPE="webhook", MONITOR_DESTINATIONS__HOOK__URL=slack.url,
        MONITOR_POLL_TICK="0.5s", MONITOR_DELIVERY_TICK="0.5s", MONITOR_DELIVERY_LEASE="3s",
        MONITOR_SOURCE_LEASE=f"{LEASE}s", MONITOR_FETCH_TIMEOUT="2s",
        MONITOR_FETCH_CONCURRENCY="4",
        MONITOR_FETCH_PER_HOST="4", MONITOR_PARSE_PROCESSES="0")
    return workspace


def test_three_instances_share_300_feeds_and_deliver_every_alert_once(
        setup: Workspace, feeds: FeedServer, slack: SlackServer, tmp_path: Path) -> None:
    urls = serve(feeds, delay=0.05)
    setup.write_feeds(*urls)
    # Started together on an empty database: the migration lock lets one create the schema.
    instances = [start(setup, name, tmp_path) for name in "ABC"]
    try:
        everything = {headline(n) for n in range(FEEDS)}
        assert wait_for(lambda: set(delivered(slack)) >= everything, 120), \
            f"{len(everything - set(delivered(slack)))} alerts missing"
        time.sleep(2)  # later ticks must add nothing
        assert [p.poll() for p in instances] == [None, None, None]  # all still running
    finally:
        stop(*instances)
    counts = delivered(slack)
    assert set(counts) == everything
    assert max(counts.values()) == 1, [t for t, c in counts.items() if c > 1][:5]
    # Each feed was fetched once (its next poll is an hour away), and the instances shared
    # the work.
    fetched = collections.Counter(path for path, _ in feeds.requests)
    assert len(fetched) == FEEDS and max(fetched.values()) == 1
    by_instance = collections.Counter(h.get("User-Agent") for _, h in feeds.requests)
    assert len(by_instance) == 3, by_instance


def test_a_killed_instances_sources_are_polled_by_the_others_after_its_lease(
        setup: Workspace, feeds: FeedServer, slack: SlackServer, tmp_path: Path) -> None:
    setup.env.update(MONITOR_SOURCE_LEASE=f"{KILL_LEASE}s", MONITOR_FETCH_TIMEOUT="5s")
    # A starts alone while every feed answers slowly, so it holds sources with fetches in
    # flight; then the feeds answer promptly, B and C start and poll the rest, and A is killed
    # while they run. A's sources must wait for its lease, though B and C are busy polling.
    urls = serve(feeds, delay=30.0)
    setup.write_feeds(*urls)
    # A's deliveries never complete (its webhook accepts connections and never answers): a
    # message in flight when an instance is killed may go out twice, the documented window
    # (test_delivery.py's SIGKILL test), and this test is about A's sources, not its sends.
    # Whatever A had claimed is delivered by B or C once its lease has run out.
    hole = socket.create_server(("127.0.0.1", 0), backlog=64)
    a = start(setup, "A", tmp_path, MONITOR_DESTINATIONS__HOOK__URL=(
        f"http://127.0.0.1:{hole.getsockname()[1]}/hook"))
    others: list[subprocess.Popen] = []
    try:
        assert wait_for(lambda: len(feeds.requests) >= 4, 30), "A never fetched"
        by_a = len(feeds.requests)
        held = {path for path, _ in feeds.requests}
        serve(feeds)  # answering promptly from now on
        others = [start(setup, name, tmp_path) for name in "BC"]
        assert wait_for(lambda: len(feeds.requests) >= by_a + 20, 4), "B and C never polled"
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        killed_at = time.monotonic()
        everything = {headline(n) for n in range(FEEDS)}
        assert wait_for(lambda: set(delivered(slack)) >= everything, 120), \
            f"{len(everything - set(delivered(slack)))} alerts missing"
        time.sleep(2)
    finally:
        stop(a, *others)
        hole.close()
    counts = delivered(slack)
    assert set(counts) == everything and max(counts.values()) == 1
    # The feeds A was fetching when it died were fetched again, once, by B or C, and only once
    # A's lease had run out: A renewed it every third of the lease until it died.
    again = [(p, h.get("User-Agent"), t) for (p, h), t in
             zip(feeds.requests[by_a:], feeds.request_times[by_a:]) if p in held]
    assert sorted(p for p, _, _ in again) == sorted(held)
    for path, agent, at in again:
        assert agent in ("monitor-test/B", "monitor-test/C"), (path, agent)
        assert at >= killed_at + KILL_LEASE * 2 / 3 - 0.2, (path, at - killed_at)
