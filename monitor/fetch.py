"""Fetch feeds over HTTP: conditional GET, redirects up to a limit (a loop is named as such), a
size cap counted while streaming, and a total time limit per fetch (a server that trickles
bytes is cut off). A source URL that turns out to be an HTML page is followed, once, to the feed
the page advertises (see `discover`).

httpx errors stop here: callers see `FetchResult` or a `TransientFetchError` /
`PermanentFetchError`, never an httpx exception.

TLS: certificates are checked against certifi's bundle, or against `SSL_CERT_FILE` /
`SSL_CERT_DIR` when set (httpx reads them), which is how a private CA is trusted.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx

from monitor.discover import feed_links, looks_like_html
from monitor.errors import FetchError, PermanentFetchError, TransientFetchError

if TYPE_CHECKING:
    from monitor.settings import Settings

# Longer validators are not kept (nor sent back): a real one is far shorter, and the store's
# columns hold these lengths. Such a feed is simply fetched whole each time.
ETAG_MAX, LAST_MODIFIED_MAX = 500, 100


ACCEPT = ("application/rss+xml, application/atom+xml, application/rdf+xml, "
          "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5")


@dataclass(frozen=True)
class FetchSettings:
    """What fetching needs of the settings, and nothing more: a fetch worker gets this (no
    webhook, token or password goes down its pipe, and it need not load the settings)."""

    fetch_max_bytes: int
    max_redirects: int
    fetch_timeout: timedelta
    fetch_concurrency: int
    user_agent: str

    @classmethod
    def of(cls, settings: Settings) -> FetchSettings:
        return cls(settings.fetch_max_bytes, settings.max_redirects, settings.fetch_timeout,
                   settings.fetch_concurrency, settings.user_agent)


@dataclass(frozen=True)
class FetchResult:
    url: str  # the final URL, after redirects
    status: int
    body: bytes | None  # None when the server answered 304 Not Modified
    etag: str | None
    last_modified: str | None
    content_type: str | None
    elapsed_ms: int
    # What the body is the feed of, before redirects: the URL asked for, or the link that the
    # HTML page there pointed to. Relative links in the feed belong to this URL.
    feed_url: str | None = None
    # The HTML page (after its redirects) whose feed link led here, when one did.
    discovered_from: str | None = None
    max_age: float | None = None  # seconds, from Cache-Control


    @property
    def not_modified(self) -> bool:
        return self.status == 304


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _validator(value: str | None, limit: int) -> str | None:
    return value if value is not None and len(value) <= limit else None


def _max_age(value: str | None) -> float | None:
    """`max-age` from a Cache-Control header; None when absent, or when `no-cache` or
    `no-store` say not to rely on it."""
    if not value:
        return None
    age = None
    for directive in value.lower().split(","):
        name, _, argument = directive.strip().partition("=")
        if name in ("no-cache", "no-store"):
            return None
        if name == "max-age" and argument.strip().strip('"').isdigit():
            age = float(argument.strip().strip('"'))
    return age


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx error, if there is one (httpx wraps httpcore wraps ssl)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _linked_from(error: FetchError, page: str) -> FetchError:
    """An error fetching a discovered feed, saying which page sent us there."""
    reason = f"{error.reason}, fetching the feed that {page} links to"
    if isinstance(error, TransientFetchError):
        return TransientFetchError(error.url, reason, status=error.status,
                                   retry_after=error.retry_after)
    return PermanentFetchError(error.url, reason, status=error.status)


class Fetcher:
    """One pooled HTTP client for every source. Use as an async context manager."""

    def __init__(self, settings: Settings | FetchSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.max_bytes = settings.fetch_max_bytes
        self.max_redirects = settings.max_redirects
        self.total_timeout = settings.fetch_timeout.total_seconds()
        per_op = min(self.total_timeout, 20.0)
        # Redirects are followed by `_exchange`, not httpx: it can name a loop, and it never
        # reads the body of a redirect (httpx would, with no size cap).
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(per_op, connect=min(per_op, 10.0)),
            limits=httpx.Limits(max_connections=settings.fetch_concurrency,
                                max_keepalive_connections=settings.fetch_concurrency),
            headers={"User-Agent": settings.user_agent, "Accept": ACCEPT},
            transport=transport,
        )

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(self, url: str, *, etag: str | None = None,
                    last_modified: str | None = None) -> FetchResult:
        """GET `url`, conditionally when validators are given. The time limit covers the
        whole fetch, a discovered feed included."""
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.total_timeout):
                fetched = await self._get(url, headers, started)
                if fetched.body is None or not looks_like_html(fetched.body):
                    return fetched
                return await self._follow_feed_link(fetched, etag, started)
        except TimeoutError:
            raise TransientFetchError(url, f"timed out after {self.total_timeout:g}s") from None

    async def _follow_feed_link(self, page: FetchResult, etag: str | None,
                                started: float) -> FetchResult:
        """The feed an HTML page advertises, fetched once: never a second hop. The result
        keeps the feed's ETag but not its Last-Modified: the caller sends its validators to
        the page next time, and a page older than the feed's date could answer 304 for a feed
        that has changed, while no page carries the feed's ETag."""
        assert page.body is not None
        links = await asyncio.to_thread(feed_links, page.body, page.url, page.content_type)
        if not links:
            raise PermanentFetchError(page.url, "not a feed: an HTML page that links to no "
                                      "feed", status=page.status)
        link = links[0]
        try:
            feed = await self._get(link, {"If-None-Match": etag} if etag else {}, started)
        except FetchError as exc:
            raise _linked_from(exc, page.url) from None
        if feed.body is not None and looks_like_html(feed.body):
            raise PermanentFetchError(
                page.url, f"not a feed: an HTML page whose feed link {link} is an HTML page "
                "too", status=feed.status)
        return replace(feed, last_modified=None, discovered_from=page.url)

    async def _get(self, url: str, headers: dict[str, str], started: float) -> FetchResult:
        """One URL, its redirects followed; httpx errors become fetch errors about `url`."""
        try:
            return await self._exchange(url, headers, started)
        except httpx.TimeoutException:
            raise TransientFetchError(url, "timed out") from None
        except httpx.UnsupportedProtocol as exc:
            raise PermanentFetchError(url, f"unsupported URL: {exc}") from None
        except httpx.DecodingError:
            raise PermanentFetchError(url, "the response body could not be decoded") from None
        except httpx.TransportError as exc:
            tls = _ssl_error(exc)
            if isinstance(tls, ssl.SSLCertVerificationError):
                # Retrying cannot help until the server's certificate or our trust changes.
                raise PermanentFetchError(
                    url, f"TLS certificate not trusted: {tls.verify_message}") from None
            if tls is not None:
                raise TransientFetchError(url, f"TLS handshake failed: {tls.reason or tls}") \
                    from None
            reason = str(exc) or type(exc).__name__
            raise TransientFetchError(url, f"connection failed: {reason}") from None
        except httpx.InvalidURL as exc:
            raise PermanentFetchError(url, f"invalid URL: {exc}") from None

    async def _exchange(self, url: str, headers: dict[str, str],
                        started: float) -> FetchResult:
        request = self.client.build_request("GET", url, headers=headers)
        hops: list[tuple[str, str]] = []  # (from, to) of each redirect so far
        while True:
            response = await self.client.send(request, stream=True)
            try:
                if response.next_request is None:
                    return await self._read(url, response, started)
                following = response.next_request
            finally:
                await response.aclose()
            hop = (str(request.url), str(following.url))
            if hop in hops:
                # The same redirect twice: the server will keep sending us round. (Once is
                # allowed: a redirect to the same URL can be a server setting a cookie.)
                cycle = [u for u, _ in hops[hops.index(hop):]] + [hop[0]]
                raise PermanentFetchError(url, "redirect loop: " + " -> ".join(cycle))
            if len(hops) >= self.max_redirects:
                raise PermanentFetchError(url, f"too many redirects (more than "
                                          f"{self.max_redirects})")
            hops.append(hop)
            request = following

    async def _read(self, url: str, response: httpx.Response, started: float) -> FetchResult:
        status = response.status_code
        if status == 304:
            # A 304 has no body, but one left unread makes httpcore close the connection
            # instead of keeping it: every poll of an unchanged feed would connect anew.
            await response.aread()
            return self._result(url, response, None, started)
        if status == 429 or status >= 500:
            raise TransientFetchError(
                url, f"HTTP {status}", status=status,
                retry_after=_retry_after(response.headers.get("Retry-After")))
        if status >= 400:
            raise PermanentFetchError(url, f"HTTP {status}", status=status)
        if status >= 300:
            raise PermanentFetchError(url, f"HTTP {status} with no usable Location",
                                      status=status)
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise PermanentFetchError(url, f"response of {declared} bytes is over the "
                                      f"{self.max_bytes}-byte cap", status=status)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise PermanentFetchError(url, f"response is over the {self.max_bytes}-byte "
                                          "cap", status=status)
            chunks.append(chunk)
        return self._result(url, response, b"".join(chunks), started)

    @staticmethod
    def _result(url: str, response: httpx.Response, body: bytes | None,
                started: float) -> FetchResult:
        return FetchResult(
            url=str(response.url), status=response.status_code, body=body,
            etag=_validator(response.headers.get("ETag"), ETAG_MAX),
            last_modified=_validator(response.headers.get("Last-Modified"), LAST_MODIFIED_MAX),
            content_type=response.headers.get("Content-Type"),
            elapsed_ms=int((time.monotonic() - started) * 1000), feed_url=url,
            max_age=_max_age(response.headers.get("Cache-Control")))
