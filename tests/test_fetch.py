"""The fetcher against a real local HTTP server that behaves well and badly."""

from __future__ import annotations

import asyncio
import gzip
import sqlite3
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CORPUS, FeedServer, Workspace, hours_ago, rss
from monitor.discover import looks_like_html
from monitor.errors import PermanentFetchError, TransientFetchError
from monitor.fetch import Fetcher
from monitor.parse import parse_feed
from monitor.settings import Settings

FEED = rss([{"guid": "1", "title": "Cosco", "link": "http://example.org/1"}])


def fetch(url: str, **settings: object) -> object:
    async def go() -> object:
        async with Fetcher(Settings(_env_file=None, **settings)) as fetcher:
            return await fetcher.fetch(url)
    return asyncio.run(go())


def fetch_twice(url: str) -> tuple:
    async def go() -> tuple:
        async with Fetcher(Settings(_env_file=None)) as fetcher:
            first = await fetcher.fetch(url)
            second = await fetcher.fetch(url, etag=first.etag,
                                         last_modified=first.last_modified)
            return first, second
    return asyncio.run(go())


def test_conditional_get_gets_304_with_the_etag(feeds: FeedServer) -> None:
    url = feeds.set("/f.xml", FEED, headers={"Last-Modified": "Mon, 02 Nov 2026 10:00:00 GMT"})
    first, second = fetch_twice(url)
    assert first.status == 200 and first.body == FEED and first.etag
    assert second.status == 304 and second.not_modified and second.body is None
    sent = feeds.requests[-1][1]
    assert sent["If-None-Match"] == first.etag
    assert sent["If-Modified-Since"] == "Mon, 02 Nov 2026 10:00:00 GMT"
    assert "monitor/" in sent["User-Agent"]


def test_validators_too_long_to_be_real_are_not_kept(feeds: FeedServer) -> None:
    url = feeds.set("/long.xml", FEED, conditional=False,
                    headers={"ETag": f'"{"e" * 600}"', "Last-Modified": "M" * 150})
    first, second = fetch_twice(url)
    assert first.status == 200 and (first.etag, first.last_modified) == (None, None)
    sent = feeds.requests[-1][1]
    assert "If-None-Match" not in sent and "If-Modified-Since" not in sent
    assert second.status == 200 and second.body == FEED


def test_unchanged_feeds_are_polled_over_one_kept_alive_connection(feeds: FeedServer) -> None:
    url = feeds.set("/f.xml", FEED)

    async def go() -> list:
        async with Fetcher(Settings(_env_file=None)) as fetcher:
            first = await fetcher.fetch(url)
            return [await fetcher.fetch(url, etag=first.etag) for _ in range(20)]
    assert all(r.not_modified for r in asyncio.run(go()))
    assert feeds.connections == 1  # not one per 304


def test_size_cap_is_enforced_while_streaming(feeds: FeedServer) -> None:
    big = b"<rss>" + b"x" * 50_000 + b"</rss>"
    declared = feeds.set("/big.xml", big)
    undeclared = feeds.set("/stream.xml", big, length=False)
    for url in (declared, undeclared):
        with pytest.raises(PermanentFetchError, match="cap"):
            fetch(url, fetch_max_bytes=10_000)
    assert fetch(undeclared, fetch_max_bytes=100_000).body == big


def test_compressed_body_that_expands_past_the_cap_is_refused(feeds: FeedServer) -> None:
    bomb = gzip.compress(b"<rss>" + b" " * 2_000_000 + b"</rss>")
    assert len(bomb) < 10_000
    url = feeds.set("/bomb.xml", bomb, headers={"Content-Encoding": "gzip"})
    with pytest.raises(PermanentFetchError, match="cap"):
        fetch(url, fetch_max_bytes=100_000)


def test_a_server_that_trickles_is_cut_off_by_the_total_limit(feeds: FeedServer) -> None:
    url = feeds.set("/slow.xml", FEED, trickle=0.05)  # ~10 s for the whole body
    started = time.monotonic()
    with pytest.raises(TransientFetchError, match="timed out"):
        fetch(url, fetch_timeout="1s")
    assert time.monotonic() - started < 5


def redirect(feeds: FeedServer, path: str, to: str, body: bytes = b"") -> str:
    return feeds.set(path, body, status=302, headers={"Location": to}, conditional=False)


def test_redirects_are_followed_up_to_a_limit(feeds: FeedServer) -> None:
    target = feeds.set("/final.xml", FEED)
    feeds.set("/moved.xml", b"", status=301, headers={"Location": target}, conditional=False)
    result = fetch(feeds.url("/moved.xml"))
    assert result.url == target and result.body == FEED
    assert result.feed_url == feeds.url("/moved.xml") and result.discovered_from is None
    for i in range(6):
        redirect(feeds, f"/hop-{i}", f"/hop-{i + 1}")
    feeds.set("/hop-6", FEED)
    with pytest.raises(PermanentFetchError, match="too many redirects"):
        fetch(feeds.url("/hop-0"), max_redirects=5)
    assert fetch(feeds.url("/hop-0"), max_redirects=6).body == FEED


def test_a_redirect_loop_is_named_and_ends_quickly(feeds: FeedServer) -> None:
    a = redirect(feeds, "/loop-a", "/loop-b")
    b = redirect(feeds, "/loop-b", "/loop-a")
    started = time.monotonic()
    with pytest.raises(PermanentFetchError, match="redirect loop") as error:
        fetch(a, max_redirects=20)
    assert time.monotonic() - started < 2
    assert f"{a} -> {b} -> {a}" in str(error.value)
    assert feeds.hits("/loop-a") + feeds.hits("/loop-b") <= 4  # not 20


def test_the_body_of_a_redirect_is_never_read(feeds: FeedServer) -> None:
    target = feeds.set("/final.xml", FEED)
    url = redirect(feeds, "/moved.xml", target, body=b"x" * 200_000)
    assert fetch(url, fetch_max_bytes=10_000).body == FEED


@pytest.mark.parametrize("status,kind,retry_after", [
    (500, TransientFetchError, None), (503, TransientFetchError, 120.0),
    (429, TransientFetchError, 120.0), (404, PermanentFetchError, None),
    (410, PermanentFetchError, None), (403, PermanentFetchError, None),
])
def test_http_errors_are_classified(feeds: FeedServer, status: int, kind: type,
                                    retry_after: float | None) -> None:
    headers = {"Retry-After": "120"} if retry_after else {}
    url = feeds.set("/e.xml", b"error", status=status, headers=headers, conditional=False)
    with pytest.raises(kind) as error:
        fetch(url)
    assert error.value.status == status
    if retry_after:
        assert error.value.retry_after == retry_after


def test_connection_refused_is_transient() -> None:
    with pytest.raises(TransientFetchError, match="connection failed"):
        fetch("http://127.0.0.1:9/feed.xml")


# Wrong content types and HTML pages ------------------------------------------------------------

PAGE = b"<!DOCTYPE html><html><head><title>Home</title></head><body>Hi</body></html>"


def page_linking(*links: str, before: str = "") -> bytes:
    """An HTML page whose head holds `before` and then the given <link> elements."""
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>News</title>"
            f"{before}{''.join(links)}</head><body><h1>News</h1>"
            f'<link rel="alternate" type="application/rss+xml" href="/not-in-the-head.xml">'
            f"</body></html>").encode()


def rss_link(href: str, kind: str = "application/rss+xml", rel: str = "alternate") -> str:
    return f'<link rel="{rel}" type="{kind}" title="Feed" href="{href}">'


@pytest.mark.parametrize("body,html", [
    (PAGE, True),
    (b"\xef\xbb\xbf\n  <!-- generated -->\n<HTML><head></head></HTML>", True),
    (b"<!doctype html><meta charset=utf-8><title>t</title><p>x", True),
    (b"<!DOCTYPE html>\n<div>no head at all</div>", True),
    ('<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
     '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n<html xmlns="http://www.w3.org/'
     '1999/xhtml"><head/></html>'.encode("utf-16"), True),
    (FEED, False),
    (b'<?xml version="1.0"?><!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN" "x"><rss/>',
     False),  # feeds are seen with an HTML doctype: the root decides
    (b'<?xml version="1.0"?><?xml-stylesheet href="s.xsl"?><feed xmlns="http://www.w3.org/'
     b'2005/Atom"><link rel="alternate" type="application/atom+xml" href="x"/></feed>', False),
    (b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"></rdf:RDF>', False),
    (b"", False), (b"not markup at all", False),
])
def test_an_html_page_is_told_from_a_feed_by_its_body(body: bytes, html: bool) -> None:
    assert looks_like_html(body) is html


def test_no_feed_of_the_corpus_looks_like_a_page() -> None:
    feeds = [p for p in CORPUS.rglob("*.xml")]
    assert feeds
    assert [p.name for p in feeds if looks_like_html(p.read_bytes())] == []


@pytest.mark.parametrize("content_type", [
    "application/rss+xml", "text/html", "text/html; charset=iso-8859-1",
    "application/octet-stream", "text/plain", None])
def test_a_feed_parses_whatever_type_it_is_served_as(feeds: FeedServer,
                                                     content_type: str | None) -> None:
    body = rss([{"guid": "1", "title": "Perú y China: el puerto", "link": "/1"}])
    url = feeds.set("/f", body, content_type=content_type)
    result = fetch(url)
    assert result.content_type == content_type and result.discovered_from is None
    feed = parse_feed(result.body, url=result.url, content_type=result.content_type)
    assert [e.title for e in feed.entries] == ["Perú y China: el puerto"]
    assert feed.entries[0].link == feeds.url("/1")
    assert feed.problem is None  # a mislabelled type is not a problem of the document


@pytest.mark.parametrize("content_type", ["text/html", "application/rss+xml",
                                          "application/xml"])
def test_an_html_page_is_not_a_feed_whatever_it_is_served_as(feeds: FeedServer,
                                                              content_type: str) -> None:
    url = feeds.set("/page", PAGE, content_type=content_type)
    with pytest.raises(PermanentFetchError, match="not a feed: an HTML page") as error:
        fetch(url)
    assert error.value.url == url
    with pytest.raises(PermanentFetchError, match="not a feed: an HTML page"):
        parse_feed(PAGE, url=url, content_type=content_type)


@pytest.mark.parametrize("head,feed_path", [
    (rss_link("feed.xml"), "/news/feed.xml"),  # relative to the page
    (rss_link("/rss?section=world&amp;lang=es"), "/rss?section=world&lang=es"),
    (rss_link("{root}/abs.xml", "application/atom+xml", rel="Alternate feed"), "/abs.xml"),
    (rss_link("/comments.xml", rel="stylesheet") + rss_link("/first.xml", "text/css")
     + rss_link("/main.xml") + rss_link("/comments.xml"), "/main.xml"),  # the first feed link
    ('<base href="/feeds/">' + rss_link("main.rss"), "/feeds/main.rss"),
    ("<link rel=alternate type='application/rss+xml; charset=utf-8' href=unquoted.xml>",
     "/news/unquoted.xml"),
])
def test_an_html_page_is_followed_to_the_feed_it_links_to(feeds: FeedServer, head: str,
                                                          feed_path: str) -> None:
    page = feeds.set("/news/", page_linking(head.format(root=feeds.url(""))),
                     content_type="text/html; charset=utf-8")
    feed = feeds.set(feed_path, FEED, content_type="application/rss+xml")
    result = fetch(page)
    assert result.body == FEED and result.status == 200
    assert result.feed_url == feeds.url(feed_path) and result.url == feeds.url(feed_path)
    assert result.discovered_from == page
    assert feed.startswith(feeds.url(""))
    parsed = parse_feed(result.body, url=result.feed_url, content_type=result.content_type)
    assert [e.title for e in parsed.entries] == ["Cosco"]


def test_a_discovered_feed_is_fetched_conditionally(feeds: FeedServer) -> None:
    page = feeds.set("/", page_linking(rss_link("/feed.xml")), content_type="text/html",
                     headers={"Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"})
    feeds.set("/feed.xml", FEED, headers={"Last-Modified": "Mon, 02 Nov 2026 10:00:00 GMT"})
    first, second = fetch_twice(page)
    assert first.status == 200 and first.etag and first.discovered_from == page
    # The feed's date is not handed back: sent to the page, which is older, it could have the
    # page answer 304 on the next poll though the feed had changed.
    assert first.last_modified is None
    assert second.not_modified and second.body is None and second.discovered_from == page
    (page_path, to_page), (feed_path, to_feed) = feeds.requests[-2:]
    assert (page_path, feed_path) == ("/", "/feed.xml")
    assert to_page["If-None-Match"] == first.etag and "If-Modified-Since" not in to_page
    assert to_feed["If-None-Match"] == first.etag


def test_discovery_is_one_hop_never_two(feeds: FeedServer) -> None:
    page = feeds.set("/a", page_linking(rss_link("/b")), content_type="text/html")
    second = feeds.set("/b", page_linking(rss_link("/c")), content_type="application/rss+xml")
    feeds.set("/c", FEED)
    with pytest.raises(PermanentFetchError, match="not a feed") as error:
        fetch(page)
    assert page in str(error.value) and second in str(error.value)
    assert feeds.hits("/c") == 0


def test_an_error_fetching_a_discovered_feed_names_the_page(feeds: FeedServer) -> None:
    page = feeds.set("/a", page_linking(rss_link("/gone.xml")), content_type="text/html")
    feeds.set("/gone.xml", b"gone", status=410, conditional=False)
    with pytest.raises(PermanentFetchError, match="HTTP 410") as error:
        fetch(page)
    assert error.value.status == 410 and error.value.url == feeds.url("/gone.xml")
    assert page in str(error.value)
    feeds.set("/gone.xml", b"busy", status=503, headers={"Retry-After": "60"},
              conditional=False)
    with pytest.raises(TransientFetchError) as transient:
        fetch(page)
    assert transient.value.retry_after == 60 and page in str(transient.value)


def test_a_source_that_is_a_page_is_polled_like_a_feed(feeds: FeedServer,
                                                       workspace: Workspace) -> None:
    """The poll never needs to know: items come from the feed the page links to."""
    items = [{"guid": f"g{i}", "title": f"Story {i}", "link": f"/story/{i}",
              "date": hours_ago(1)} for i in range(3)]
    feeds.set("/feed.xml", rss(items))
    page = feeds.set("/", page_linking(rss_link("feed.xml")), content_type="text/html")
    workspace.write_feeds(page)
    workspace.run("run", "--once", check=True)
    with sqlite3.connect(workspace.db) as db:
        titles = sorted(t for (t,) in db.execute("SELECT title FROM items"))
        errors = db.execute("SELECT last_error FROM sources").fetchall()
    assert titles == ["Story 0", "Story 1", "Story 2"] and errors == [(None,)]
    assert feeds.hits("/feed.xml") == 1


# TLS ------------------------------------------------------------------------------------------

@pytest.fixture
def tls_feeds(tls_ca: tuple[ssl.SSLContext, Path]) -> Iterator[tuple[FeedServer, Path]]:
    server_context, ca_file = tls_ca
    server = FeedServer(tls=server_context)
    yield server, ca_file
    server.close()


def test_an_untrusted_certificate_is_a_permanent_error(tls_feeds: tuple[FeedServer, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = tls_feeds
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    url = server.set("/f.xml", FEED)
    with pytest.raises(PermanentFetchError, match="TLS certificate not trusted") as error:
        fetch(url)
    assert error.value.url == url


def test_a_certificate_from_a_trusted_ca_works(tls_feeds: tuple[FeedServer, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    server, ca_file = tls_feeds
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # how an operator trusts a private CA
    url = server.set("/f.xml", FEED)
    result = fetch(url)
    assert result.status == 200 and result.body == FEED


def test_parse_never_reads_a_path_or_url(tmp_path) -> None:  # noqa: ANN001
    secret = tmp_path / "secret.xml"
    secret.write_bytes(FEED)
    # A body that is itself a path or a URL is just bytes to us, not something to open.
    for body in (str(secret).encode(), b"http://127.0.0.1:9/feed.xml"):
        with pytest.raises(PermanentFetchError, match="not a feed"):
            parse_feed(body, url="http://example.org/feed")


@pytest.mark.parametrize("header, seconds", [
    ("max-age=600", 600.0), ("public, max-age=\"120\", must-revalidate", 120.0),
    ("no-cache, max-age=600", None), ("max-age=600, no-store", None), ("private", None),
    ("max-age=soon", None), (None, None)])
def test_cache_control_max_age_is_read_unless_caching_is_refused(
        feeds: FeedServer, header: str | None, seconds: float | None) -> None:
    url = feeds.set("/cc.xml", rss([]), headers={"Cache-Control": header} if header else {})
    assert fetch(url).max_age == seconds
