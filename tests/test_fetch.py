"""The fetcher against a real local HTTP server that behaves well and badly."""

from __future__ import annotations

import asyncio
import gzip
import time

import pytest

from conftest import FeedServer, rss
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


def test_redirects_are_followed_up_to_a_limit(feeds: FeedServer) -> None:
    target = feeds.set("/final.xml", FEED)
    feeds.set("/moved.xml", b"", status=301, headers={"Location": target}, conditional=False)
    result = fetch(feeds.url("/moved.xml"))
    assert result.url == target and result.body == FEED
    feeds.set("/loop-a", b"", status=302, headers={"Location": "/loop-b"}, conditional=False)
    feeds.set("/loop-b", b"", status=302, headers={"Location": "/loop-a"}, conditional=False)
    with pytest.raises(PermanentFetchError, match="too many redirects"):
        fetch(feeds.url("/loop-a"))


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


def test_html_is_not_a_feed(feeds: FeedServer) -> None:
    page = b"<!DOCTYPE html><html><head><title>Home</title></head><body>Hi</body></html>"
    url = feeds.set("/page", page, content_type="text/html")
    result = fetch(url)
    with pytest.raises(PermanentFetchError, match="not a feed"):
        parse_feed(result.body, url=result.url, content_type=result.content_type)


def test_parse_never_reads_a_path_or_url(tmp_path) -> None:  # noqa: ANN001
    secret = tmp_path / "secret.xml"
    secret.write_bytes(FEED)
    # A body that is itself a path or a URL is just bytes to us, not something to open.
    for body in (str(secret).encode(), b"http://127.0.0.1:9/feed.xml"):
        with pytest.raises(PermanentFetchError, match="not a feed"):
            parse_feed(body, url="http://example.org/feed")
