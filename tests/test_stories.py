"""One alert per story: copies across feeds, changing GUIDs and links, look-alike headlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.exc import OperationalError

from conftest import FeedServer, SlackServer, Workspace, hours_ago, rss
from monitor import stories
from monitor.normalize import normalize_entry
from monitor.store import Outgoing, Store
from monitor.store.models import Item as ItemRow
from monitor.store import storyindex
from monitor.store.storyindex import StoryIndex
from monitor.stories import (Candidate, Fingerprint, best_match, clean_title, compatible,
                             fingerprint, language, similarity, strip_dateline)

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
    lithium = fingerprint("Peru bets on lithium exports", "")
    mines = fingerprint("Lithium mines in Peru expand", "")
    assert lithium is not None and mines is not None
    assert best_match(mines, [Candidate(1, lithium)]) is None
    again = fingerprint("UPDATE 1-Peru bets on lithium exports - Outlet", "")
    match = best_match(again, [Candidate(1, lithium)]) if again is not None else None
    assert match is not None and match.story_id == 1


def print_of(title: str, lead: str = "") -> Fingerprint:
    found = fingerprint(title, lead)
    assert found is not None
    return found


def test_clean_title_drops_a_bracketed_chinese_prefix() -> None:
    assert clean_title("【视频】神舟十九号载人飞船发射取得圆满成功") == "神舟十九号载人飞船发射取得圆满成功"


def test_datelines_name_the_agency_not_the_event() -> None:
    for dateline in ("LIMA, Nov 14 (Reuters) - ", "LIMA, Nov. 14 (Xinhua) -- ",
                     "Lima, 14 nov (EFE).- ", "BOCA CHICA, Texas (AP) — ", "LIMA, Peru – ",
                     "(Reuters) - ", "新华社利马11月14日电 ", "（中央社華盛頓12日綜合外電報導）"):
        assert strip_dateline(dateline + "China and Peru signed") == "China and Peru signed"
    for lead in ("Peru's copper production fell 1.2% in September - the ministry said.",
                 "A vast new port at Chancay, 80km north of Lima (Peru), has opened."):
        assert strip_dateline(lead) == lead


def test_the_language_is_told_from_the_script_and_function_words() -> None:
    assert language("Peru and China upgrade trade pact as Xi visits Lima\nPeru and China "
                    "signed an updated free trade deal on Thursday.") == "en"
    assert language("Perú y China actualizan su TLC durante la visita de Estado de Xi Jinping"
                    "\nPerú y China firmaron este jueves la actualización de su tratado.") == "es"
    assert language("中国与秘鲁签署自由贸易协定升级议定书") == "zh-hans"
    assert language("美南方司令部司令：中企秘魯錢凱港恐供解放軍海軍使用") == "zh-hant"
    assert language("Chancay") == ""  # too little to tell
    # A Chinese name in English text leaves it English.
    assert language("Foreign Minister Qin Gang (秦刚) said on Sunday the talks with the "
                    "secretary of state were candid.") == "en"


def test_chinese_of_undecided_script_can_be_either() -> None:
    simplified = print_of("国家统计局：10月份CPI同比上涨0.3%",
                          "国家统计局9日发布数据，10月份全国居民消费价格指数同比上涨0.3%。")
    undecided = print_of("10月CPI同比上涨0.3%，PPI同比下降2.9%")
    assert (simplified.lang, undecided.lang) == ("zh-hans", "zh")
    assert compatible(simplified, undecided)
    match = best_match(undecided, [Candidate(1, simplified)])
    assert match is not None and match.story_id == 1


def test_the_same_event_in_two_languages_is_two_stories() -> None:
    english = print_of("China's Xi inaugurates Peru megaport",
                       "Chinese President Xi Jinping and Peruvian President Dina Boluarte on "
                       "Thursday inaugurated the Chancay deep-water port.")
    spanish = print_of("Xi Jinping y Dina Boluarte inauguran el megapuerto de Chancay",
                       "Los presidentes de China, Xi Jinping, y de Perú, Dina Boluarte, "
                       "inauguraron este jueves el puerto de Chancay.")
    assert not compatible(english, spanish)


def test_figures_agree_to_the_precision_of_the_less_precise() -> None:
    lead = "Peru's copper production fell 1.2% in September from a year earlier."
    assert compatible(print_of("Peru copper output edges down 1.2% in September", lead),
                      print_of("Peru copper output edges down 1% in September", lead))
    # A trailing zero claims no precision: agencies' 7.0 and 7,2 are the same quake.
    lead = "Un sismo se registró frente a la costa sur, informó el instituto."
    assert compatible(print_of("Sismo de magnitud 7.0 sacude Arequipa", lead),
                      print_of("Terremoto de magnitud 7,2 frente a la costa sur", lead))
    lead = "Consumer prices rose from a year earlier, the statistics bureau said."
    assert not compatible(print_of("China's October CPI rises 0.3% year on year", lead),
                          print_of("China's November CPI rises 0.2% year on year", lead))


def test_reports_dated_days_apart_or_on_other_weekdays_are_other_news() -> None:
    error = print_of("Peru to 'correct error' that gave Cosco exclusivity over Chancay",
                     "LIMA, March 22 (Reuters) - Peru's port authority said on Friday it "
                     "wants to fix an administrative error that gave Cosco exclusive rights.")
    reaction = print_of("Cosco evaluating impact of Peru move on Chancay exclusivity",
                        "LIMA, March 25 (Reuters) - Cosco Shipping said on Monday it was "
                        "evaluating the impact of the move to annul its exclusive rights.")
    assert not compatible(error, reaction)
    undated = print_of("Peru moves to strip Cosco of exclusive operator status at Chancay",
                       "Peru's port authority says it never had the power to grant Cosco "
                       "exclusive rights at the Chancay terminal.")
    assert compatible(error, undated)
    # A date weeks away is about something else: the inauguration to come.
    won = print_of("Javier Milei gana el balotaje en Argentina",
                   "Buenos Aires, 19 nov (EFE).- Javier Milei ganó este domingo la segunda "
                   "vuelta frente a Sergio Massa.")
    sweeps = print_of("Milei arrasa a Massa y llega a la Casa Rosada",
                      "Milei se impuso en la segunda vuelta y gobernará desde el 10 de "
                      "diciembre.")
    assert compatible(won, sweeps)


def test_template_headlines_with_another_filling_are_other_news() -> None:
    lead = "The commander of U.S. Southern Command met senior government leaders."
    peru = print_of("SOUTHCOM commander meets with senior leaders in Peru", lead)
    chile = print_of("SOUTHCOM commander meets with senior leaders in Chile", lead)
    assert not compatible(peru, chile)
    space = print_of("Perú y China firman memorando de cooperación en el uso pacífico del espacio",
                     "Perú y China suscribieron un memorando para cooperar en satélites.")
    trade = print_of("Perú y China firman protocolo de optimización del Tratado de Libre "
                     "Comercio", "Perú y China suscribieron el protocolo que optimiza el TLC.")
    assert not compatible(space, trade)
    # One ordinary word changed in an otherwise equal headline is an edit, not a template.
    lead = "China's Cosco Shipping is evaluating the impact of Peru's lawsuit."
    assert compatible(
        print_of("China's Cosco Shipping evaluating impact of Peru lawsuit on megaport "
                 "exclusivity", lead),
        print_of("China's Cosco Shipping evaluating impact of Peru lawsuit on megaport "
                 "development", lead))


def test_chinese_reworded_headlines_meet_through_bigrams() -> None:
    landing = print_of("嫦娥六号返回器携带来自月背的月球样品安全着陆",
                       "6月25日14时07分，嫦娥六号返回器携带来自月球背面的月球样品准确着陆。")
    first = print_of("人类首次！月球背面样品回到地球",
                     "历时53天，嫦娥六号完成世界首次月球背面采样返回，返回器平稳落地。")
    other = print_of("神舟十九号载人飞船发射取得圆满成功",
                     "神舟十九号载人飞船在酒泉卫星发射中心发射，发射取得圆满成功。")
    assert similarity(first, landing) > stories.THRESHOLD > similarity(first, other)


def test_rare_words_outweigh_the_people_every_story_shares() -> None:
    """Same day, same presidents, same palace: the port opening and the trade protocol."""
    port = print_of("China's Xi inaugurates Peru megaport as Beijing extends reach",
                    "Chinese President Xi Jinping and Peruvian President Dina Boluarte on "
                    "Thursday inaugurated the Chancay deep-water port, a project controlled "
                    "by state-owned Cosco Shipping.")
    trade = print_of("China, Peru sign protocol to upgrade free trade agreement",
                     "China and Peru on Thursday signed a protocol to upgrade their free "
                     "trade agreement, witnessed by Chinese President Xi Jinping and Peruvian "
                     "President Dina Boluarte.")
    copy = print_of("Xi opens Chinese-funded megaport in Peru",
                    "Chinese leader Xi Jinping and Peru's President Dina Boluarte on Thursday "
                    "opened a deep-water port north of Lima built with Chinese money.")
    match = best_match(copy, [Candidate(1, port), Candidate(2, trade)])
    assert match is not None and match.story_id == 1


def test_a_follow_up_days_later_must_be_a_near_duplicate() -> None:
    first = print_of("Blinken holds talks with China's foreign minister in Beijing",
                     "Antony Blinken met Chinese Foreign Minister Qin Gang for seven hours.")
    reworded = print_of("Blinken and Qin agree to keep talking after Beijing meeting",
                        "The top diplomats of the United States and China held talks with "
                        "Qin Gang in Beijing for seven hours.")
    soon = stories.REWORDED_WITHIN - timedelta(hours=1)
    late = stories.REWORDED_WITHIN + timedelta(hours=1)
    assert stories.THRESHOLD <= similarity(reworded, first) < stories.NEAR
    assert best_match(reworded, [Candidate(1, first, soon)]) is not None
    assert best_match(reworded, [Candidate(1, first, late)]) is None
    assert best_match(first, [Candidate(1, first, late)]) is not None  # a copy still joins


def test_a_feed_does_not_rewrite_its_own_story() -> None:
    """A second, different article from the same outlet is another story unless it is a
    near-duplicate (an update)."""
    first = print_of("Blinken holds talks with China's foreign minister in Beijing",
                     "Antony Blinken met Chinese Foreign Minister Qin Gang for seven hours.")
    reworded = print_of("Blinken and Qin agree to keep talking after Beijing meeting",
                        "The top diplomats of the United States and China held talks with "
                        "Qin Gang in Beijing for seven hours.")
    assert best_match(reworded, [Candidate(1, first, same_outlet=True)]) is None
    update = print_of("UPDATE 1-Blinken holds talks with China's foreign minister in Beijing",
                      "Antony Blinken met Chinese Foreign Minister Qin Gang for seven hours.")
    match = best_match(update, [Candidate(1, first, same_outlet=True)])
    assert match is not None and not match.weak


def test_an_item_that_joined_on_weak_evidence_cannot_pull_another_in_alone() -> None:
    first = print_of("Blinken holds talks with China's foreign minister in Beijing",
                     "Antony Blinken met Chinese Foreign Minister Qin Gang for seven hours.")
    reworded = print_of("Blinken and Qin agree to keep talking after Beijing meeting",
                        "The top diplomats of the United States and China held talks with "
                        "Qin Gang in Beijing for seven hours.")
    match = best_match(reworded, [Candidate(1, first)])
    assert match is not None and match.weak == (match.score < stories.STRONG)
    reworded.weak = True
    follower = print_of("Blinken and Qin agree to keep talking",
                        "The top diplomats of the United States and China held talks with "
                        "Qin Gang in Beijing for seven hours.")
    assert best_match(follower, [Candidate(1, reworded)]) is not None  # strong on its own
    loose = print_of("Qin accepts invitation to Washington after Beijing talks",
                     "The top diplomats held talks in Beijing and Qin Gang will visit "
                     "Washington, officials said.")
    score = similarity(loose, reworded)
    assert stories.THRESHOLD <= score < stories.STRONG
    assert best_match(loose, [Candidate(1, reworded)]) is None
    reworded.weak = False
    assert best_match(loose, [Candidate(1, reworded)]) is not None


def test_signatures_round_trip_and_old_ones_are_ignored() -> None:
    original = print_of(WIRE_TITLE, WIRE_LEAD)
    original.weak = True
    stored = Fingerprint.stored(original.text, original.signature)
    assert stored is not None and stored.weak and stored.lang == original.lang == "en"
    assert (stored.title_features == original.title_features).all()
    assert (stored.lead_features == original.lead_features).all()
    assert similarity(stored, original) == pytest.approx(1.0)
    # A MinHash signature from before: 128 uint32 values, no version byte.
    assert Fingerprint.stored(original.text, bytes(range(256)) * 2) is None


def test_story_lookup_stays_bounded_however_many_items_share_words(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'bounded.db'}")
    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    store.sync_sources([("https://a.example/feed", "A", timedelta(minutes=10)),
                        ("https://b.example/feed", "B", timedelta(minutes=10))], now)
    by_name = {source.name: source for source in store.sources()}

    def outgoing(n: int, title: str) -> Outgoing:
        item = normalize_entry({"id": f"i{n}", "title": title, "summary": WIRE_LEAD,
                                "link": f"https://a.example/{n}"})
        return Outgoing(item, (), {}, fingerprint=fingerprint(item.title, item.summary))

    batch = [outgoing(n, f"{WIRE_TITLE} {n}") for n in range(stories.CANDIDATES + 20)]
    store.save_poll(by_name["A"], new=batch, changed=[], status=200, etag=None,
                    last_modified=None, feed_title=None, now=now, next_poll_at=now)
    # Every item the poll stored is in the index, under every one of its words.
    assert len(store.story_index) == len(batch)
    new = outgoing(len(batch), WIRE_TITLE)
    with store.engine.connect() as connection:
        view = store.story_index.batch(connection)
        found = store._story_candidates(view, by_name["B"], new, now + timedelta(hours=1))
        assert len(found) == stories.CANDIDATES  # all share its words; the cap holds
        assert not any(c.same_outlet for c in found)
        assert all(c.same_outlet for c in store._story_candidates(view, by_name["A"], new, now))
        # Outside the window nothing is a candidate.
        assert store._story_candidates(view, by_name["B"], new,
                                       now + stories.WINDOW + timedelta(minutes=1)) == []
    store.close()


def test_items_that_left_the_window_are_no_candidates_before_and_after_pruning(
        tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'window.db'}")
    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    store.sync_sources([("https://a.example/feed", "A", timedelta(minutes=10)),
                        ("https://b.example/feed", "B", timedelta(minutes=10))], now)
    a, b = sorted(store.sources(), key=lambda s: s.name)

    def outgoing(n: int) -> Outgoing:
        item = normalize_entry({"id": f"i{n}", "title": f"{WIRE_TITLE} {n}",
                                "summary": WIRE_LEAD, "link": f"https://a.example/{n}"})
        return Outgoing(item, (), {}, fingerprint=fingerprint(item.title, item.summary))

    later = now + timedelta(hours=50)
    for source, at, numbers in ((a, now, range(0, 3)), (b, later, range(3, 5))):
        store.save_poll(source, new=[outgoing(n) for n in numbers], changed=[], status=200,
                        etag=None, last_modified=None, feed_title=None, now=at, next_poll_at=at)
    probe = outgoing(9)
    after = now + stories.WINDOW + timedelta(minutes=1)  # the first poll's items are out
    with store.engine.connect() as connection:
        view = store.story_index.batch(connection)
        assert len(store._story_candidates(view, b, probe, later)) == 5
        # Not pruned yet: still indexed, no longer candidates.
        assert len(store.story_index) == 5
        found = store._story_candidates(view, b, probe, after)
        assert sorted(c.age for c in found) == [after - later] * 2
        store.story_index.catch_up(connection, after)  # prunes them
        assert len(store.story_index) == 2
        assert len(store._story_candidates(store.story_index.batch(connection), b, probe,
                                           after)) == 2
        assert store._story_candidates(store.story_index.batch(connection), b, probe,
                                       later + stories.WINDOW + timedelta(minutes=1)) == []
    store.close()


def test_a_story_another_writer_started_is_found_and_the_window_is_read_back(
        tmp_path: Path) -> None:
    """Two processes (here two stores) share a database: each one's index learns what the
    other wrote, inside its own story transaction; a new process reads the window back."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    one, two = Store.open(url), Store.open(url)
    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    one.sync_sources([("https://a.example/feed", "A", timedelta(minutes=10)),
                      ("https://b.example/feed", "B", timedelta(minutes=10)),
                      ("https://c.example/feed", "C", timedelta(minutes=10))], now)
    by_name = {source.name: source for source in one.sources()}

    def outgoing(feed: str, title: str, lead: str) -> Outgoing:
        item = normalize_entry({"id": f"{feed}-1", "title": title, "summary": lead,
                                "link": f"https://{feed}.example/story"})
        return Outgoing(item, (), {}, fingerprint=fingerprint(item.title, item.summary))

    def story_of(store: Store, feed: str) -> int:
        with store.engine.connect() as conn:
            return conn.execute(select(ItemRow.story_id).where(
                ItemRow.guid == f"{feed}-1")).scalar_one()

    def save(store: Store, feed: str, out: Outgoing, at: datetime) -> None:
        store.save_poll(by_name[feed], new=[out], changed=[], status=200, etag=None,
                        last_modified=None, feed_title=None, now=at, next_poll_at=at)

    # `two` loads its (empty) window first, so it can only learn of A's item by catching up.
    save(two, "C", outgoing("c", "Unrelated harvest festival opens in Cusco",
                            "Farmers gather in Cusco for the annual potato harvest fair."), now)
    save(one, "A", outgoing("a", WIRE_TITLE, WIRE_LEAD), now + timedelta(minutes=1))
    save(two, "B", outgoing("b", WIRE_TITLE, WIRE_LEAD), now + timedelta(minutes=2))
    assert story_of(two, "b") == story_of(one, "a") != story_of(two, "c")
    assert len(two.story_index) == 3
    # A third process starts with the window read from the database.
    three = Store.open(url)
    with three.engine.begin() as conn:
        three.story_index.catch_up(conn, now + timedelta(minutes=3))
    assert len(three.story_index) == 3
    for store in (one, two, three):
        store.close()


def test_a_candidate_whose_fingerprint_is_not_kept_in_memory_is_read_from_the_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index keeps only the most recently used fingerprints decoded; an older candidate's
    is read back from the items table, and the item still joins its story."""
    monkeypatch.setattr(storyindex, "DECODED", 1)
    store = Store.open(f"sqlite:///{tmp_path / 'evicted.db'}")
    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    store.sync_sources([(f"https://{n}.example/feed", n, timedelta(minutes=10))
                        for n in "ABC"], now)
    by_name = {source.name: source for source in store.sources()}

    def save(feed: str, title: str, lead: str, at: datetime) -> int:
        item = normalize_entry({"id": f"{feed}-1", "title": title, "summary": lead,
                                "link": f"https://{feed}.example/story"})
        store.save_poll(by_name[feed], new=[Outgoing(item, (), {}, fingerprint=fingerprint(
            item.title, item.summary))], changed=[], status=200, etag=None,
            last_modified=None, feed_title=None, now=at, next_poll_at=at)
        with store.engine.connect() as conn:
            return conn.execute(select(ItemRow.story_id).where(
                ItemRow.guid == f"{feed}-1")).scalar_one()

    first = save("A", WIRE_TITLE, WIRE_LEAD, now)
    other = save("C", "Unrelated harvest festival opens in Cusco",
                 "Farmers gather in Cusco for the annual potato harvest fair.",
                 now + timedelta(minutes=1))
    assert len(store.story_index) == 2 and len(store.story_index._decoded) == 1
    with store.engine.connect() as conn:
        first_id = conn.execute(select(ItemRow.id).where(ItemRow.guid == "A-1")).scalar_one()
    assert first_id not in store.story_index._decoded  # A's fingerprint must come from disk
    assert save("B", WIRE_TITLE, WIRE_LEAD, now + timedelta(minutes=2)) == first != other
    store.close()


def test_a_window_load_that_fails_is_tried_again(tmp_path: Path) -> None:
    """Had the index taken the watermark of a load that failed, it would never read the
    window: copies of stories already alerted would start stories of their own."""
    store = Store.open(f"sqlite:///{tmp_path / 'window.db'}")
    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    store.sync_sources([("https://a.example/feed", "A", timedelta(minutes=10))], now)
    source = store.sources()[0]
    item = normalize_entry({"id": "w1", "title": WIRE_TITLE, "summary": WIRE_LEAD,
                            "link": "https://a.example/w1"})
    store.save_poll(source, new=[Outgoing(item, (), {}, fingerprint=fingerprint(
        item.title, item.summary))], changed=[], status=200, etag=None, last_modified=None,
        feed_title=None, now=now, next_poll_at=now)
    index = StoryIndex()
    # A database whose newest item id can be read but whose items cannot: the load fails
    # half-way, as a dropped connection would.
    empty = create_engine(f"sqlite:///{tmp_path / 'broken.db'}")
    with empty.begin() as broken:
        broken.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY)")
        broken.exec_driver_sql("INSERT INTO items (id) VALUES (7)")
    with empty.connect() as broken, pytest.raises(OperationalError):
        index.load(broken, now)
    assert not index.loaded and len(index) == 0
    with store.engine.connect() as connection:
        index.catch_up(connection, now)
    assert index.loaded and len(index) == 1
    empty.dispose()
    store.close()
