"""Fetch feeds over HTTP: conditional GET, redirects up to a limit, a size cap counted while
streaming, and a total time limit per fetch (a server that trickles bytes is cut off).

httpx errors stop here: callers see `FetchResult` or a `TransientFetchError` /
`PermanentFetchError`, never an httpx exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from monitor.errors import PermanentFetchError, TransientFetchError
from monitor.settings import Settings

ACCEPT = ("application/rss+xml, application/atom+xml, application/rdf+xml, "
          "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5")


@dataclass(frozen=True)
class FetchResult:
    url: str  # the final URL, after redirects
    status: int
    body: bytes | None  # None when the server answered 304 Not Modified
    etag: str | None
    last_modified: str | None
    content_type: str | None
    elapsed_ms: int

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


class Fetcher:
    """One pooled HTTP client for every source. Use as an async context manager."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None):
        self.max_bytes = settings.fetch_max_bytes
        self.total_timeout = settings.fetch_timeout.total_seconds()
        per_op = min(self.total_timeout, 20.0)
        self.client = httpx.AsyncClient(
            follow_redirects=True,
            max_redirects=settings.max_redirects,
            timeout=httpx.Timeout(per_op, connect=min(per_op, 10.0)),
            limits=httpx.Limits(max_connections=settings.fetch_concurrency * 2,
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
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.total_timeout):
                return await self._get(url, headers, started)
        except TimeoutError:
            raise TransientFetchError(url, f"timed out after {self.total_timeout:g}s") from None
        except httpx.TooManyRedirects:
            raise PermanentFetchError(url, "too many redirects") from None
        except httpx.TimeoutException:
            raise TransientFetchError(url, "timed out") from None
        except httpx.UnsupportedProtocol as exc:
            raise PermanentFetchError(url, f"unsupported URL: {exc}") from None
        except httpx.DecodingError:
            raise PermanentFetchError(url, "the response body could not be decoded") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise TransientFetchError(url, f"connection failed: {reason}") from None
        except httpx.InvalidURL as exc:
            raise PermanentFetchError(url, f"invalid URL: {exc}") from None

    async def _get(self, url: str, headers: dict[str, str], started: float) -> FetchResult:
        async with self.client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if status == 304:
                return self._result(response, None, started)
            if status == 429 or status >= 500:
                raise TransientFetchError(
                    url, f"HTTP {status}", status=status,
                    retry_after=_retry_after(response.headers.get("Retry-After")))
            if status >= 400:
                raise PermanentFetchError(url, f"HTTP {status}", status=status)
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
            return self._result(response, b"".join(chunks), started)

    @staticmethod
    def _result(response: httpx.Response, body: bytes | None, started: float) -> FetchResult:
        return FetchResult(
            url=str(response.url), status=response.status_code, body=body,
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
            content_type=response.headers.get("Content-Type"),
            elapsed_ms=int((time.monotonic() - started) * 1000))
