"""Item identity, canonical links, clean text and UTC dates."""

from __future__ import annotations

from datetime import UTC, datetime

from conftest import rss
from monitor.normalize import canonical_url, normalize_entry
from monitor.parse import parse_feed


def items(body: bytes) -> list:
    feed = parse_feed(body, url="http://example.org/feed.xml")
    return [normalize_entry(e, feed_language=feed.language) for e in feed.entries]


def test_canonical_url_drops_tracking_fragments_and_default_ports() -> None:
    assert canonical_url("HTTPS://News.Example:443/a/b?utm_source=rss&id=7&fbclid=x#top") == \
        "https://news.example/a/b?id=7"
    assert canonical_url("http://news.example:80/a?traffic_source=rss&ref=home") == \
        "http://news.example/a"
    assert canonical_url("http://news.example:8080/a?b=2&a=1") == \
        "http://news.example:8080/a?a=1&b=2"
    assert canonical_url("https://news.example") == "https://news.example/"
    for bad in (None, "", "javascript:alert(1)", "mailto:x@example.org", "ftp://x/y", "http://"):
        assert canonical_url(bad) is None


def test_identity_prefers_guid_then_link_then_text() -> None:
    with_guid, with_link, bare, bare_again = items(rss([
        {"guid": "g-1", "title": "A", "link": "http://example.org/a"},
        {"title": "B", "link": "http://example.org/news/b-story?utm_campaign=x"},
        {"title": "C", "description": "text"},
        {"title": "C", "description": "text"},
    ]))
    assert with_guid.guid == "g-1"
    same_link = items(rss([{"title": "B2",
                            "link": "http://example.org/news/b-story?utm_medium=y"}]))[0]
    assert with_link.identity == same_link.identity  # tracking parameters do not matter
    # A site's root or a short section page names no single article: the text decides.
    home_a, home_b = items(rss([{"title": "X", "link": "http://example.org/"},
                                {"title": "Y", "link": "http://example.org/news"}]))
    assert not any(k.startswith(("url:", "path:")) for k in home_a.keys + home_b.keys)
    assert home_a.identity != home_b.identity
    assert bare.identity == bare_again.identity
    assert len({with_guid.identity, with_link.identity, bare.identity}) == 3
    assert all(len(i.identity) == 64 for i in (with_guid, with_link, bare))


def test_content_hash_changes_with_what_a_reader_sees() -> None:
    base = {"guid": "g", "title": "A", "link": "http://example.org/a", "description": "x"}
    [a] = items(rss([base]))
    [same] = items(rss([base]))
    [edited] = items(rss([dict(base, description="y")]))
    [retitled] = items(rss([dict(base, title="B")]))
    assert a.content_hash == same.content_hash
    assert len({a.content_hash, edited.content_hash, retitled.content_hash}) == 3
    assert a.identity == edited.identity == retitled.identity


def test_html_becomes_clean_text() -> None:
    [item] = items(rss([{"guid": "g", "title": "Perú &amp; China",
                         "description": "<p>Uno</p><p>dos&nbsp;tres</p><script>bad()</script>"
                                        "<style>p{}</style>cuatro\x07"}]))
    assert item.title == "Perú & China"
    assert item.summary == "Uno\ndos tres\ncuatro"


def test_dates_are_utc_and_language_falls_back_to_the_feed() -> None:
    body = rss([{"guid": "g", "title": "A",
                 "raw": "<pubDate>Wed, 8 May 2019 17:02:18 +0200</pubDate>"},
                {"guid": "h", "title": "B", "raw": "<pubDate>not a date</pubDate>"}],
               extra="<language>es-PE</language>")
    dated, undated = items(body)
    assert dated.published_at == datetime(2019, 5, 8, 15, 2, 18, tzinfo=UTC)
    assert undated.published_at is None
    assert dated.language == "es-PE"
