"""One alert per story: copies across feeds, changing GUIDs and links, look-alike headlines."""

from __future__ import annotations

from conftest import FeedServer, SlackServer, Workspace, hours_ago, rss
from monitor.stories import clean_title, compatible, fingerprint, similarity

WIRE_TITLE = "Cosco Shipping opens Chancay megaport as Peru courts Chinese trade"
WIRE_LEAD = ("China's Cosco Shipping inaugurated the $3.5 billion Chancay megaport north of "
             "Lima on Thursday, a deepwater hub that Peru says will cut shipping times to "
             "Asia by ten days.")


def copies() -> tuple[dict, dict, dict]:
    return (
        {"guid": "wire-1", "title": WIRE_TITLE, "description": WIRE_LEAD,
         "link": "https://wire.example/world/cosco-chancay-1?utm_source=rss",
         "date": hours_ago(2)},
        {"guid": "https://outlet-b.example/2024/11/14/chancay", "date": hours_ago(1),
         "title": f"UPDATE 1-{WIRE_TITLE} - Outlet B", "description": WIRE_LEAD[:150],
         "link": "https://outlet-b.example/2024/11/14/chancay"},
        {"guid": "CBMi-google-news-id", "title": f"{WIRE_TITLE} - Wire Service",
         "link": "https://news.google.com/rss/articles/CBMi-google-news-id?oc=5",
         "description": WIRE_LEAD, "date": hours_ago(1),
         "raw": '<source url="https://wire.example">Wire Service</source>'},
    )


LOOKALIKE = {"guid": "other-event", "date": hours_ago(1),
             "title": "Cosco Shipping ship Xin Beijing arrives at Chancay megaport",
             "description": "The first container vessel from Shanghai docked at the terminal "
                            "on Monday after a 23-day crossing, the port operator said.",
             "link": "https://wire.example/world/xin-beijing-arrives"}


def slack_texts(slack: SlackServer) -> list[str]:
    return [str(p["blocks"]) for p in slack.received]


def test_the_same_story_in_three_feeds_alerts_once(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    a, b, c = copies()
    workspace.write_feeds(feeds.set("/a.xml", rss([a])), feeds.set("/b.xml", rss([b])),
                          feeds.set("/c.xml", rss([c])))
    workspace.run("run", "--once", check=True)
    workspace.run("run", "--once", check=True)  # a restart between polls changes nothing
    assert len(slack.received) == 1
    [text] = slack_texts(slack)
    assert "Also reported by" in text
    assert "Wire Service via Feed 2" in text  # the Google News copy names its publisher

    listing = workspace.run("stories", check=True).stdout
    assert listing.count("story ") == 1
    assert "also reported by 2:" in listing and "slack:sent" in listing


def test_later_copies_and_edits_never_alert_again(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    a, b, c = copies()
    workspace.write_feeds(feeds.set("/a.xml", rss([a])), feeds.set("/b.xml", rss([])),
                          feeds.set("/c.xml", rss([])))
    workspace.run("run", "--once", check=True)
    feeds.set("/b.xml", rss([b]))
    feeds.set("/a.xml", rss([dict(a, title=WIRE_TITLE + " (corrected)")]))
    workspace.run("run", "--once", check=True)
    feeds.set("/c.xml", rss([c]))
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 1
    assert "also reported by 2:" in workspace.run("stories", check=True).stdout


def test_a_lookalike_headline_about_another_event_alerts_on_its_own(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    a, _, _ = copies()
    workspace.write_feeds(feeds.set("/a.xml", rss([a])), feeds.set("/b.xml", rss([LOOKALIKE])))
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 2


def test_a_changed_guid_scheme_and_domain_is_the_same_item(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    """BBC's real change: isPermaLink guids on bbc.co.uk became `#0` guids on bbc.com."""
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    before = {"guid": "http://www.bbc.co.uk/news/world-latin-america-38691103",
              "link": "http://www.bbc.co.uk/news/world-latin-america-38691103",
              "title": "Cosco Shipping bets on Peru's Chancay port", "date": hours_ago(3),
              "description": "The Chinese company controls the terminal."}
    after = dict(before, guid="https://www.bbc.com/news/world-latin-america-38691103#0",
                 link="https://www.bbc.com/news/world-latin-america-38691103?at_medium=RSS",
                 title="Cosco Shipping bets big on Peru's Chancay port")
    url = feeds.set("/bbc.xml", rss([before]))
    workspace.write_feeds(url)
    workspace.run("run", "--once", check=True)
    feeds.set("/bbc.xml", rss([after]))
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 1
    listing = workspace.run("stories", check=True).stdout
    assert listing.count("story ") == 1 and "also reported by" not in listing


def test_a_story_that_did_not_match_alerts_once_when_a_matching_copy_arrives(
        workspace: Workspace, feeds: FeedServer, slack: SlackServer) -> None:
    workspace.env["MONITOR_SLACK_WEBHOOK_URL"] = slack.url
    plain = {"guid": "p-1", "date": hours_ago(2), "link": "https://wire.example/p-1",
             "title": "Chinese state shipping giant opens deepwater hub north of Lima",
             "description": "The $3.5 billion deepwater hub north of Lima opened on Thursday "
                            "and will cut shipping times to Asia by ten days, officials said."}
    named = dict(plain, guid="p-2", link="https://outlet-b.example/p-2",
                 description=plain["description"] + " The operator is Cosco Shipping.")
    workspace.write_feeds(feeds.set("/a.xml", rss([plain])), feeds.set("/b.xml", rss([])))
    workspace.run("run", "--once", check=True)
    assert slack.received == []
    feeds.set("/b.xml", rss([named]))
    workspace.run("run", "--once", check=True)
    feeds.set("/a.xml", rss([plain, dict(named, guid="p-3", link="https://wire.example/p-3")]))
    workspace.run("run", "--once", check=True)
    assert len(slack.received) == 1
    assert workspace.run("stories", check=True).stdout.count("story ") == 1


def test_clean_title_drops_wire_prefixes_and_outlet_suffixes() -> None:
    assert clean_title("UPDATE 2-Peru signs deal - El Comercio") == "Peru signs deal"
    assert clean_title("EXCLUSIVE: Peru signs deal | Gestión") == "Peru signs deal"
    assert clean_title("Headline - countynewscenter.com", "countynewscenter.com") == "Headline"
    # A dash that is part of the headline stays.
    assert clean_title("Peru - China trade hits record in 2024") == \
        "Peru - China trade hits record in 2024"


def test_fingerprints() -> None:
    a = fingerprint(WIRE_TITLE, WIRE_LEAD)
    b = fingerprint(f"UPDATE 1-{WIRE_TITLE} - Outlet B", WIRE_LEAD[:150])
    other = fingerprint(LOOKALIKE["title"], LOOKALIKE["description"])
    assert a is not None and b is not None and other is not None
    assert similarity(a, b) > 0.6
    assert similarity(a, other) < 0.3
    assert fingerprint("Hi", "") is None  # too little text to judge
    march = fingerprint("Peru exports to China rise 12% in March",
                        "Shipments of copper led the increase, the trade ministry said.")
    april = fingerprint("Peru exports to China rise 8% in April",
                        "Shipments of copper led the increase, the trade ministry said.")
    assert march is not None and april is not None
    assert not compatible(march, april)
    assert compatible(a, b)


def test_short_headlines_need_more_in_common() -> None:
    from monitor.stories import Candidate, best_match

    lithium = fingerprint("Peru bets on lithium exports", "")
    mines = fingerprint("Lithium mines in Peru expand", "")
    assert lithium is not None and mines is not None
    assert best_match(mines, [Candidate(1, lithium)]) is None
    again = fingerprint("UPDATE 1-Peru bets on lithium exports - Outlet", "")
    assert again is not None and best_match(again, [Candidate(1, lithium)]) == 1
