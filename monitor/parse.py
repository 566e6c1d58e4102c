"""Parse a fetched body into entries with feedparser, from bytes, never from a path or URL.

An undeclared charset (common in Chinese feeds) is detected with chardet, which feedparser uses
when it is installed.

`feedparser.parse()` given a str treats it as a file name or URL and reads it; handing it
`io.BytesIO(body)` keeps it to the bytes we fetched under our own size and time limits. The
final URL and Content-Type are passed as response headers, so relative links resolve against
the real location and an HTTP charset wins over the XML prolog, as it should.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import feedparser

from monitor.errors import PermanentFetchError


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    link: str | None
    language: str | None
    entries: list[Any] = field(default_factory=list)
    problem: str | None = None  # why feedparser flagged the document as ill-formed, if it did


def parse_feed(body: bytes, *, url: str, content_type: str | None = None) -> ParsedFeed:
    # Without a Content-Type feedparser would assume ISO-8859-1 and never sniff the charset;
    # a generic XML type lets the document's own declaration, or detection, decide.
    headers = {"content-location": url, "content-type": content_type or "application/xml"}
    try:
        result = feedparser.parse(io.BytesIO(body), response_headers=headers)
    except Exception as exc:  # feedparser can raise on hostile input (e.g. `&#xD800;`)
        raise PermanentFetchError(url, f"cannot parse the feed ({type(exc).__name__}: "
                                  f"{str(exc)[:200]})") from None
    problem = None
    if result.get("bozo"):
        exc = result.get("bozo_exception")
        problem = f"{type(exc).__name__}: {exc}" if exc is not None else "ill-formed"
    if not result.entries and not result.get("version"):
        raise PermanentFetchError(url, f"not a feed ({problem or 'no feed format recognised'})")
    feed = result.get("feed", {})
    return ParsedFeed(title=feed.get("title") or None, link=feed.get("link") or None,
                      language=feed.get("language") or None, entries=list(result.entries),
                      problem=problem)
