"""Parse a fetched body into entries with feedparser, from bytes, never from a path or URL.

An undeclared charset (common in Chinese feeds) is detected with chardet, which feedparser uses
when it is installed.

`feedparser.parse()` given a str treats it as a file name or URL and reads it; handing it
`io.BytesIO(body)` keeps it to the bytes we fetched under our own size and time limits. The
final URL and Content-Type are passed as response headers, so relative links resolve against
the real location and an HTTP charset wins over the XML prolog, as it should.

Servers often label feeds with a type that is not XML (`text/html`, `text/plain`,
`application/octet-stream`). Such a label says nothing about the document, so it is not passed
on: the body is presented as XML, and the document's own BOM or encoding declaration wins over
the label's charset, which then only fills in when the document declares none. Whether the body
is a feed is decided from the body, never from the label: an HTML page is not a feed whatever
it is served as.

`read_feed` first offers the body to `fastfeed`, which reads well-formed UTF-8 RSS in a
fraction of the time and gives exactly what feedparser would, or declines; then feedparser
reads it.
"""

from __future__ import annotations

import codecs
import io
import re
from dataclasses import dataclass, field
from typing import Any

import feedparser

from monitor import fastfeed
from monitor.discover import looks_like_html
from monitor.errors import PermanentFetchError
from monitor.normalize import Item, normalize_entry, without_keys

_XML_DECLARED_ENCODING = re.compile(rb"""\A\s*<\?xml[^>]*\sencoding\s*=""")


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    link: str | None
    language: str | None
    entries: list[Any] = field(default_factory=list)
    problem: str | None = None  # why feedparser flagged the document as ill-formed, if it did
    ttl_minutes: int | None = None  # RSS <ttl>: how long the publisher says it may be cached


def parse_feed(body: bytes, *, url: str, content_type: str | None = None) -> ParsedFeed:
    headers = {"content-location": url, "content-type": _as_xml(content_type, body)}
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
        if looks_like_html(body):
            raise PermanentFetchError(url, "not a feed: an HTML page")
        raise PermanentFetchError(url, f"not a feed ({problem or 'no feed format recognised'})")
    return _parsed(result.get("feed", {}), list(result.entries), problem)


def _parsed(feed: Any, entries: list[Any], problem: str | None) -> ParsedFeed:
    return ParsedFeed(title=feed.get("title") or None, link=feed.get("link") or None,
                      language=feed.get("language") or None, entries=entries,
                      problem=problem, ttl_minutes=_ttl(feed.get("ttl")))


def _ttl(value: object) -> int | None:
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isdigit() and 0 < int(text) < 100_000 else None


def _is_xml_type(media_type: str) -> bool:
    return media_type in ("application/xml", "text/xml") or media_type.endswith("+xml")


def _as_xml(content_type: str | None, body: bytes) -> str:
    """The Content-Type to show feedparser. Without one it would assume ISO-8859-1 and never
    sniff the charset; a generic XML type lets the document's own declaration, or detection,
    decide. An XML type is passed as it is (its charset rules, per RFC 3023); another type is
    a mislabelled feed, whose charset is kept only if the document declares none."""
    if not content_type:
        return "application/xml"
    media_type, _, params = content_type.partition(";")
    if _is_xml_type(media_type.strip().lower()):
        return content_type
    declared = body.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) \
        or _XML_DECLARED_ENCODING.match(body[:512]) is not None
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip("'\""):
            charset = value.strip().strip("'\"")
    return "application/xml" if declared or not charset else f"application/xml; charset={charset}"


@dataclass(frozen=True)
class FeedItems:
    """A parsed feed as the poller needs it: its own fields and its items, normalised and
    told apart. Plain data, so it can come back from a parsing process."""

    feed: ParsedFeed  # without its entries
    items: list[Item]


def read_feed(body: bytes, *, url: str, content_type: str | None = None,
              fast: bool = True) -> FeedItems:
    """Parse and normalise: the CPU-heavy part of a poll, run in a worker process. A
    well-formed UTF-8 RSS feed takes the fast path (`fastfeed`, which gives what feedparser
    would); anything else, or `fast=False`, goes through feedparser."""
    found = fastfeed.read(body, url=url, content_type=_as_xml(content_type, body)) \
        if fast else None
    parsed = _parsed(*found) if found else parse_feed(body, url=url, content_type=content_type)
    items = unique_items([normalize_entry(e, feed_language=parsed.language)
                          for e in parsed.entries])
    return FeedItems(ParsedFeed(parsed.title, parsed.link, parsed.language,
                                problem=parsed.problem, ttl_minutes=parsed.ttl_minutes), items)


def unique_items(items: list[Item]) -> list[Item]:
    """A link that several different items of the feed share (a section page, say) names
    none of them; then a feed that lists one item twice (under any of its keys): keep the
    first."""
    owners: dict[str, set[str]] = {}
    for item in items:
        for key in item.keys:
            if key.startswith(("url:", "path:")):
                owners.setdefault(key, set()).add(item.guid or item.title)
    shared = {key for key, who in owners.items() if len(who) > 1}
    if shared:
        items = [without_keys(item, shared) for item in items]
    seen: set[str] = set()
    unique = []
    for item in items:
        if not seen.intersection(item.keys):
            unique.append(item)
        seen.update(item.keys)
    return unique


def worker_init(parent: int) -> None:
    """In a worker process: exit when the daemon that started it is gone (a daemon killed
    with SIGKILL cannot stop its workers, and an orphan would hold its pipes and memory), and
    only then: the daemon shuts its workers down when it stops."""
    import os
    import signal
    import threading
    import time

    # Stopping is the daemon's business: a SIGTERM or Ctrl-C sent to the whole process group
    # must not kill a parse under way while the daemon finishes its work.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the daemon's: reload its rules

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
