"""The real daemon (`python -m monitor`) against real local feed, Slack and SMTP servers."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time

import pytest
from structlog.testing import capture_logs

from monitor.app import App
from monitor.rules import load_rules
from monitor.settings import Settings

from conftest import FeedServer, SlackServer, SmtpServer, Workspace, hours_ago, now, rss


def channels(ws: Workspace, slack: SlackServer, smtp: SmtpServer) -> None:
    ws.env.update(MONITOR_SLACK_WEBHOOK_URL=slack.url, MONITOR_SMTP_HOST="127.0.0.1",
                  MONITOR_SMTP_PORT=str(smtp.port), MONITOR_SMTP_TLS="none",
                  MONITOR_SMTP_USERNAME="", MONITOR_SMTP_PASSWORD="",
                  MONITOR_EMAIL_FROM="monitor@example.org",
                  MONITOR_EMAIL_TO="analyst@example.org, desk@example.org")


def alerts(ws: Workspace) -> list[tuple]:
    with sqlite3.connect(ws.db) as db:
        return db.execute("SELECT destination, status, attempts, last_error FROM alerts "
                          "ORDER BY id").fetchall()


def slack_titles(slack: SlackServer) -> list[str]:
    return [p["blocks"][0]["text"]["text"] for p in slack.received]


STORIES = [
    {"guid": "a-1", "title": "Cosco Shipping expands Chancay port", "link":
     "https://news.example/a-1?utm_source=rss", "description": "COSCO Shipping said on Monday "
     "that the megaport of Chancay will double capacity.", "date": hours_ago(1)},
    {"guid": "a-2", "title": "Costco opens new warehouse in Lima", "link":
     "https://news.example/a-2", "description": "The retailer Costco expands.",
     "date": hours_ago(1)},
    {"guid": "a-3", "title": "中远海运在钱凯港的新航线", "link": "https://news.example/a-3",
     "description": "中远海运宣布开通新航线。", "date": hours_ago(2)},
    {"guid": "a-4", "title": "El megapuerto de Chancay recibe su primer buque", "link":
     "https://news.example/a-4", "description": "El puerto de Chancay, en Perú, operado por "
     "Cosco.", "date": hours_ago(3)},
]


def test_once_alerts_each_matching_story_once_in_slack_and_email(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer, smtp: SmtpServer) -> None:
    channels(workspace, slack, smtp)
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES)))

    first = workspace.run("run", "--once", check=True)

    assert len(slack.received) == 3, first.stderr
    assert len(smtp.messages) == 3
    assert all(e[1] == ["analyst@example.org", "desk@example.org"] for e in smtp.inbox.envelopes)
    joined = "\n".join(slack_titles(slack))
    assert "Costco" not in joined
    assert "中远海运在钱凯港的新航线" in joined
    assert "Chancay" in joined and "megapuerto" in joined
    # One notification names every rule the story matched.
    spanish = next(p for p in slack.received if "megapuerto" in p["blocks"][0]["text"]["text"])
    rules_line = spanish["blocks"][3]["elements"][0]["text"]
    assert "COSCO Shipping in the news" in rules_line and "Chancay megaport" in rules_line
    subjects = sorted(m["Subject"] for m in smtp.messages)
    assert any("COSCO Shipping in the news, Chancay megaport" in s for s in subjects)

    second = workspace.run("run", "--once", check=True)
    assert len(slack.received) == 3, second.stderr
    assert len(smtp.messages) == 3
    assert [status for _, status, _, _ in alerts(workspace)] == ["sent"] * 6


def test_unchanged_and_edited_items_do_not_alert_again(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    url = feeds.set("/news.xml", rss(STORIES[:2]), conditional=False)
    workspace.write_feeds(url)
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 1

    edited = [dict(STORIES[0], title="UPDATED: Cosco Shipping expands Chancay port again",
                   description="New figures from COSCO Shipping.",
                   link="https://news.example/a-1?utm_medium=social"), STORIES[1]]
    feeds.set("/news.xml", rss(edited), conditional=False)
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 1

    # An item that matched nothing before, and now does, alerts — once.
    now_matching = [edited[0], dict(STORIES[1], title="Costco and Cosco Shipping sign port deal")]
    feeds.set("/news.xml", rss(now_matching), conditional=False)
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 2
    assert "Costco and Cosco Shipping" in slack_titles(slack)[1]


def test_first_poll_records_items_older_than_the_lookback_quietly(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    old = [dict(STORIES[0], guid="old-1", date=hours_ago(30)),
           dict(STORIES[3], guid="old-2", date=hours_ago(24 * 7)),
           {"guid": "undated", "title": "Cosco Shipping undated item"}]
    fresh = dict(STORIES[2], date=hours_ago(5))
    url = feeds.set("/news.xml", rss(old + [fresh]))
    workspace.write_feeds(url)
    workspace.run("run", "--once", check=True)
    assert slack_titles(slack) and len(slack.received) == 1
    assert "中远海运" in slack_titles(slack)[0]

    # After the first poll, a newly seen item alerts whatever its date says.
    later = {"guid": "new-after-first-poll", "date": hours_ago(48),
             "title": "Cosco Shipping orders ten container ships from Chinese yards",
             "link": "https://news.example/ships", "description": "A large order."}
    feeds.set("/news.xml", rss(old + [fresh, later]))
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 2

    # A shorter look-back on a new source, through the contract's setting.
    workspace.env["MONITOR_FIRST_POLL_LOOKBACK"] = "30m"
    workspace.env["MONITOR_DATABASE_URL"] = f"sqlite:///{workspace.root / 'other.db'}"
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 2


def test_slack_failure_is_retried_on_a_later_pass_without_duplicates(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer, smtp: SmtpServer) -> None:
    channels(workspace, slack, smtp)
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES[:1])))
    slack.respond((500, "rollup_error"))
    workspace.run("run", "--once", check=True)
    assert slack.received == [] and len(slack.attempts) == 1
    assert len(smtp.messages) == 1  # email is not held back by Slack
    [(dest, status, attempts, error)] = [a for a in alerts(workspace) if a[0] == "slack"]
    assert (status, attempts) == ("failed", 1) and "500 rollup_error" in error

    slack.respond((429, '{"ok":false,"error":"rate_limited"}', {"Retry-After": "0"}))
    workspace.run("run", "--once", check=True)
    assert slack.received == []
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 1
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 1 and len(smtp.messages) == 1
    assert len(slack.attempts) == 3
    assert sorted(a[1] for a in alerts(workspace)) == ["sent", "sent"]


def test_slack_invalid_token_is_dead_at_once_and_email_unaffected(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer, smtp: SmtpServer) -> None:
    channels(workspace, slack, smtp)
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES[:1])))
    slack.respond((403, "invalid_token"))
    result = workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    assert len(slack.attempts) == 1
    assert len(smtp.messages) == 1
    by_destination = {a[0]: a for a in alerts(workspace)}
    assert by_destination["slack"][1] == "dead"
    assert "invalid_token" in by_destination["slack"][3]
    assert by_destination["email"][1] == "sent"
    # The webhook URL is a secret: it never reaches the logs, even when Slack refuses.
    token = slack.url.rsplit("/", 1)[1]
    assert token not in result.stderr + result.stdout
    assert "invalid_token" in result.stderr


def test_smtp_down_for_one_pass_then_delivered_once(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer, smtp: SmtpServer) -> None:
    channels(workspace, slack, smtp)
    workspace.env["MONITOR_SMTP_PASSWORD"] = "pa55w0rd-not-for-logs"
    workspace.env["MONITOR_SMTP_USERNAME"] = "monitor"
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES[:1])))
    smtp.stop()
    down = workspace.run("run", "--once", check=True)
    assert smtp.messages == []
    assert len(slack.received) == 1
    assert "pa55w0rd-not-for-logs" not in down.stderr + down.stdout
    smtp.kwargs = {"auth_require_tls": False}
    smtp.start()
    workspace.env["MONITOR_SMTP_USERNAME"] = ""
    workspace.env["MONITOR_SMTP_PASSWORD"] = ""
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    assert len(smtp.messages) == 1
    assert len(slack.received) == 1


def test_hostile_titles_are_inert_in_slack_and_email(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer, smtp: SmtpServer) -> None:
    channels(workspace, slack, smtp)
    hostile = {"guid": "evil", "date": hours_ago(1),
               "title": "<!channel> Cosco Shipping <http://evil.example|click> *now* @here",
               "link": "javascript:alert(1)",
               "description": "<script>alert('x')</script><img src=x onerror=alert(1)>"
                              "Cosco Shipping & <b>partners</b> <a href='http://evil.example'>"
                              "win</a>"}
    workspace.write_feeds(feeds.set("/news.xml", rss([hostile])))
    workspace.run("run", "--once", check=True)

    [payload] = slack.received
    everything = str(payload)
    assert "<!channel>" not in everything and "<http://evil.example|click>" not in everything
    heading = payload["blocks"][0]["text"]
    assert heading["verbatim"] is True
    assert "&lt;!channel&gt;" in heading["text"]
    assert "&lt;http://evil.example|click&gt;" in heading["text"]
    assert "javascript:" not in everything  # a non-web link is not linked
    assert "*now*" not in heading["text"]  # feed text cannot format our message
    assert "onerror" not in everything and "<script" not in everything

    [message] = smtp.messages
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "&lt;!channel&gt;" in html and "<!channel>" not in html
    assert "<script" not in html and "onerror" not in html and "javascript:" not in html
    assert 'href="http://evil.example"' not in html
    assert "<!channel> Cosco Shipping" in text  # the plain part shows the text as it is
    assert "\n" not in message["Subject"]


def test_broken_sources_are_contained_and_others_go_on(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    good = feeds.set("/good.xml", rss(STORIES[:1]))
    failing = feeds.set("/down.xml", b"oops", status=503, headers={"Retry-After": "120"})
    garbage = feeds.set("/garbage.xml", b"\x00\x01 this is not a feed <html",
                        content_type="text/html")
    workspace.write_feeds(failing, garbage, good, feeds.url("/missing.xml"))
    result = workspace.run("run", "--once")
    assert result.returncode == 0, result.stderr
    assert len(slack.received) == 1
    with sqlite3.connect(workspace.db) as db:
        rows = dict(db.execute("SELECT url, last_error FROM sources").fetchall())
        failures = dict(db.execute("SELECT url, consecutive_failures FROM sources").fetchall())
    assert rows[good] is None and failures[good] == 0
    assert "HTTP 503" in rows[failing] and failures[failing] == 1
    assert "not a feed" in rows[garbage]
    assert "HTTP 404" in rows[feeds.url("/missing.xml")]
    assert "feed failed" in result.stderr


def test_same_link_in_two_feeds_is_one_story(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    copy = dict(STORIES[0], guid="other-guid", link="https://NEWS.example:443/a-1#top")
    workspace.write_feeds(feeds.set("/a.xml", rss(STORIES[:1])), feeds.set("/b.xml", rss([copy])))
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 1


def test_console_is_the_destination_when_nothing_is_configured(
        workspace: Workspace, feeds: FeedServer) -> None:
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES[:2])))
    result = workspace.run("run", "--once", check=True)
    assert "ALERT Cosco Shipping expands Chancay port" in result.stdout
    assert "Costco" not in result.stdout
    assert "matched COSCO Shipping in the news [cosco]" in result.stdout
    again = workspace.run("run", "--once", check=True)
    assert "ALERT" not in again.stdout


def test_invalid_rules_are_fatal_with_file_and_line(workspace: Workspace,
                                                    feeds: FeedServer) -> None:
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES)))
    workspace.write("broken.yaml", """\
        rules:
          - id: broken
            query: 'port AND (chancay'
        """)
    result = workspace.run("run", "--once")
    assert result.returncode != 0
    assert "broken.yaml:3:" in result.stderr and "unbalanced '('" in result.stderr
    assert feeds.requests == []  # never runs on half-loaded rules


def test_unreachable_database_is_fatal(workspace: Workspace, feeds: FeedServer) -> None:
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES)))
    result = workspace.run("run", "--once", env={
        "MONITOR_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode != 0
    assert "fatal" in result.stderr.lower() or "error" in result.stderr.lower()


def test_bad_settings_are_reported_by_name(workspace: Workspace) -> None:
    result = workspace.run("run", "--once", env={"MONITOR_FIRST_POLL_LOOKBACK": "soon",
                                                 "MONITOR_SMTP_TLS": "maybe"})
    assert result.returncode != 0
    assert "MONITOR_FIRST_POLL_LOOKBACK" in result.stderr
    assert "MONITOR_SMTP_TLS" in result.stderr


def test_daemon_polls_delivers_and_stops_cleanly_on_sigterm(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env.update(MONITOR_SLACK_WEBHOOK_URL=slack.url, MONITOR_POLL_TICK="0.3s",
                         MONITOR_DELIVERY_TICK="0.3s", MONITOR_POLL_INTERVAL="1s",
                         MONITOR_POLL_MIN_INTERVAL="1s", MONITOR_POLL_MAX_INTERVAL="1s")
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES[:1])))
    process = workspace.popen("run")
    try:
        deadline = time.monotonic() + 30
        while not slack.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(slack.received) == 1
        # A story published while the daemon runs is picked up at the source's next poll.
        feeds.set("/news.xml", rss(STORIES[:1] + [dict(STORIES[2], date=now())]))
        while len(slack.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(slack.received) == 2
        assert feeds.hits("/news.xml") >= 2
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "monitor stopped" in err
    assert len(slack.received) == 2


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_daemon_stops_on_sigint(workspace: Workspace, feeds: FeedServer, sig: int) -> None:
    workspace.write_feeds(feeds.set("/news.xml", rss([])))
    process = workspace.popen("run")
    deadline = time.monotonic() + 20
    while not feeds.requests and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "monitor stopped" in err


def linked_titles(messages: list[dict]) -> list[str]:
    """The headline of every alert in these Slack messages, single or grouped."""
    return [title for message in messages for block in message["blocks"]
            if block["type"] == "section"
            for title in re.findall(r"<https?://[^|>]+\|([^>]+)>", block["text"]["text"])]


def test_two_instances_on_one_sqlite_file_alert_once(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    stories = [{"guid": f"s-{i}", "title": f"Cosco Shipping story number {i}",
                "link": f"https://news.example/s-{i}", "date": hours_ago(1)} for i in range(30)]
    workspace.write_feeds(*(feeds.set(f"/f{i}.xml", rss(stories)) for i in range(3)))
    runs = [workspace.popen("run", "--once") for _ in range(3)]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in runs]
    assert all(code == 0 for code, _ in results), results
    workspace.run("run", "--once", check=True)
    titles = linked_titles(slack.received)  # one by one or grouped: each alert once
    assert len(titles) == 30 and len(set(titles)) == 30


def test_conditional_get_state_is_kept_between_runs(
        workspace: Workspace, feeds: FeedServer) -> None:
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES[:1])))
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    first, second = [headers for path, headers in feeds.requests if path == "/news.xml"]
    assert "If-None-Match" not in first
    assert second["If-None-Match"]


def test_fetch_concurrency_is_bounded(workspace: Workspace, feeds: FeedServer) -> None:
    workspace.env["MONITOR_FETCH_CONCURRENCY"] = "2"
    workspace.write_feeds(*(feeds.set(f"/slow{i}.xml", rss(STORIES[:1]), delay=0.4)
                            for i in range(6)))
    workspace.run("run", "--once", check=True)
    assert len(feeds.requests) == 6
    assert feeds.peak == 2


def test_sigterm_lets_in_flight_polls_and_deliveries_finish(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env.update(MONITOR_SLACK_WEBHOOK_URL=slack.url, MONITOR_POLL_TICK="0.3s",
                         MONITOR_DELIVERY_TICK="0.3s")
    slack.delay = 2.0
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES[:1])),
                          feeds.set("/slow.xml", rss([]), delay=4.0))
    process = workspace.popen("run")
    try:
        deadline = time.monotonic() + 30
        while not slack.attempts and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slack.attempts  # Slack is answering slowly, the slow feed is still loading
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "CancelledError" not in err and "unfinished" not in err
    assert len(slack.received) == 1
    assert alerts(workspace) == [("slack", "sent", 1, None)]
    with sqlite3.connect(workspace.db) as db:
        polled = dict(db.execute("SELECT url, last_status FROM sources").fetchall())
    assert polled[feeds.url("/slow.xml")] == 200  # the slow poll finished and was recorded


def test_a_feed_that_breaks_the_parser_is_contained(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    evil = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title><item>'
            b"<title>Cosco &#xD800; port</title><guid>e1</guid></item></channel></rss>")
    bad = feeds.set("/evil.xml", evil)
    workspace.write_feeds(bad, feeds.set("/good.xml", rss(STORIES[:1])))
    result = workspace.run("run", "--once")
    assert result.returncode == 0, result.stderr
    assert len(slack.received) == 1
    with sqlite3.connect(workspace.db) as db:
        error, failures, next_poll = db.execute(
            "SELECT last_error, consecutive_failures, next_poll_at FROM sources WHERE url = ?",
            (bad,)).fetchone()
    assert error and "parse" in error and failures == 1


def test_items_sharing_a_section_link_are_different_items(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    items = [{"guid": "b1", "title": "Cosco Shipping expands at Chancay port",
              "link": "https://news.example/", "date": hours_ago(1)},
             {"guid": "b2", "title": "Southern Command chief warns about Chancay port",
              "link": "https://news.example/", "date": hours_ago(1)},
             {"title": "Cosco Shipping buys ten new container ships",
              "link": "https://news.example/latest-news", "date": hours_ago(1)},
             {"title": "Chancay port handles first soybean cargo",
              "link": "https://news.example/latest-news", "date": hours_ago(1)}]
    workspace.write_feeds(feeds.set("/news.xml", rss(items)))
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 4


def test_a_redirected_feed_keeps_its_items(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    relative = rss([{"guid": "a1", "title": "Cosco Shipping at Chancay port",
                     "date": hours_ago(1)}]).replace(b'isPermaLink="false"', b"")
    url = feeds.set("/feed.xml", relative, conditional=False)
    workspace.write_feeds(url)
    workspace.run("run", "--once", check=True)
    feeds.set("/moved/feed.xml", relative, conditional=False)
    feeds.set("/feed.xml", b"", status=301, headers={"Location": "/moved/feed.xml"},
              conditional=False)
    workspace.run("run", "--once", check=True)
    assert feeds.hits("/moved/feed.xml") == 1
    assert len(slack.received) == 1


def test_slack_rate_limit_pauses_the_destination_for_the_pass(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    workspace.write_feeds(feeds.set("/news.xml", rss(STORIES)))
    slack.respond((429, '{"ok":false,"error":"rate_limited"}', {"Retry-After": "1"}))
    workspace.run("run", "--once", check=True)
    assert len(slack.attempts) == 1  # the others waited instead of being refused too
    assert sorted(a[2] for a in alerts(workspace)) == [0, 0, 1]
    time.sleep(1.2)
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 3 and len(slack.attempts) == 4


def test_rules_reload_on_change_and_sighup_and_bad_changes_keep_the_old_rules(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env.update(MONITOR_SLACK_WEBHOOK_URL=slack.url, MONITOR_POLL_TICK="0.3s",
                         MONITOR_DELIVERY_TICK="0.3s", MONITOR_POLL_INTERVAL="1s",
                         MONITOR_POLL_MIN_INTERVAL="1s", MONITOR_POLL_MAX_INTERVAL="1s")
    workspace.write_feeds(feeds.set("/news.xml", rss([])))
    process = workspace.popen("run")

    def publish(guid: str, title: str) -> None:
        feeds.set("/news.xml", rss([{"guid": guid, "title": title, "date": now(),
                                     "link": f"https://news.example/{guid}-story"}]))

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 20
        while len(slack.received) < count and time.monotonic() < deadline:
            time.sleep(0.1)

    try:
        # Up and polling: the rules are loaded and the watcher is starting.
        deadline = time.monotonic() + 30
        while not feeds.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        assert feeds.requests, "the daemon never polled"
        # An editor saves by writing a temporary file and renaming it over the rules file.
        tmp = workspace.rules / ".extra.yaml.swp"
        tmp.write_text("rules:\n  - id: lithium\n    query: 'lithium NEAR/3 peru'\n",
                       encoding="utf-8")
        tmp.rename(workspace.rules / "extra.yaml")
        time.sleep(2)
        publish("l1", "Peru bets on lithium exports")
        wait_for(1)
        assert len(slack.received) == 1

        # A broken change is reported; the rules in force stay in force.
        (workspace.rules / "extra.yaml").write_text(
            "rules:\n  - id: lithium\n    query: 'lithium AND (peru'\n", encoding="utf-8")
        time.sleep(2)
        publish("l2", "Lithium mines in Peru expand")
        wait_for(2)
        assert len(slack.received) == 2

        # SIGHUP reloads too (here: a valid file again, with another rule).
        (workspace.rules / "extra.yaml").write_text(
            "rules:\n  - id: copper\n    query: 'copper'\n", encoding="utf-8")
        process.send_signal(signal.SIGHUP)
        time.sleep(2)
        publish("c1", "Copper output rises; lithium in Peru too")
        wait_for(3)
        titles = [p["text"] for p in slack.received]
        assert len(titles) == 3 and "copper" in titles[2]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "rules not reloaded" in err and "unbalanced '('" in err
    assert err.count("rules reloaded") >= 2


def test_a_rules_change_the_watcher_missed_is_picked_up_by_the_next_tick(
        workspace: Workspace, feeds: FeedServer) -> None:
    """The file watcher cannot see every change (network filesystems, a change made while it
    was starting). The poll tick compares the rules directory with what was loaded."""
    workspace.write_feeds(feeds.set("/news.xml", rss([])))
    settings = Settings(_env_file=None, rules_dir=workspace.rules,
                        database_url=f"sqlite:///{workspace.db}")

    async def scenario() -> list[object]:
        app = App(settings)
        await app.start()
        try:
            seen: list[object] = [await app.reload_if_changed()]  # nothing changed yet
            workspace.write("extra.yaml", "rules:\n  - id: lithium\n    query: lithium\n")
            seen += [await app.reload_if_changed(), await app.reload_if_changed()]
            seen.append(sorted(r.id for r in app.ruleset.rules))
            # A broken change is tried once, not on every tick, and the rules stay in force.
            workspace.write("extra.yaml", "rules:\n  - id: lithium\n    query: '(lithium'\n")
            with capture_logs() as logged:
                seen += [await app.reload_if_changed(), await app.reload_if_changed()]
            seen.append([e["event"] for e in logged if e["log_level"] == "error"])
            seen.append(sorted(r.id for r in app.ruleset.rules))
            (workspace.rules / "extra.yaml").unlink()
            seen.append(await app.reload_if_changed())
            seen.append(sorted(r.id for r in app.ruleset.rules))
            return seen
        finally:
            await app.close()

    before = sorted(r.id for r in load_rules(workspace.rules).rules)
    seen = asyncio.run(scenario())
    assert seen == [False, True, False, sorted(before + ["lithium"]),
                    False, False, ["rules problem", "rules not reloaded: keeping the rules in force"],
                    sorted(before + ["lithium"]), True, before]
