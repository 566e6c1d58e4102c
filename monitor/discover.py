"""Tell an HTML page from a feed, and find the feed a page points to (RSS/Atom autodiscovery:
`<link rel="alternate" type="application/rss+xml" href="…">` in the page's head).

Pure functions over bytes; the fetcher decides what to do with the answer (follow the link
once). The Content-Type is not trusted either way: servers label feeds `text/html` and pages
`application/rss+xml`, so the decision is made from the document itself.

The page is read with the standard library's tolerant `html.parser`, the same as `htmltext`, and
only up to `<body>`: the links belong in the head, and a huge page costs no more than its head.
Bytes become text with w3lib's browser-like rules (BOM, HTTP charset, `<meta charset>`).
"""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from w3lib.encoding import html_to_unicode

FEED_TYPES = frozenset({"application/rss+xml", "application/atom+xml", "application/rdf+xml"})

# Elements that can open an HTML document (the html/head/body tags may be omitted) but are never
# the root of a feed. Anything else (an unknown root) is left to the parser, so a feed is never
# mistaken for a page.
_HTML_ROOTS = frozenset({"html", "head", "body", "meta", "title", "link", "base", "script",
                         "style"})
# Roots of feeds (by local name). Feeds are seen with an HTML doctype: the root decides.
_FEED_ROOTS = frozenset({"rss", "feed", "rdf", "channel"})
_SNIFF_BYTES = 8192
# Whitespace, the XML declaration and other processing instructions, comments.
_PROLOG = re.compile(r"(?:\s+|<\?.*?\?>|<!--.*?-->)*", re.S)
_DOCTYPE = re.compile(r"<!doctype\s+([^\s>\[]+)[^>\[]*(?:\[.*?\]\s*)?>", re.S | re.I)
_ELEMENT = re.compile(r"<([A-Za-z][\w:.-]*)")


def _start(body: bytes) -> str:
    """The first bytes of the body as text, good enough to read markup names."""
    head = body[:_SNIFF_BYTES]
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                          (codecs.BOM_UTF16_BE, "utf-16-be")):
        if head.startswith(bom):
            return head[len(bom):].decode(encoding, errors="ignore")
    # Markup names are ASCII in every charset a page or feed is likely to use.
    return head.decode("latin-1")


def looks_like_html(body: bytes) -> bool:
    """True when the document is an HTML page: its first element is one only HTML has, or it
    has an HTML doctype and its first element is not a feed's root. When in doubt (an unknown
    root, a prolog longer than we look at), False."""
    text = _start(body)
    at = _PROLOG.match(text).end()
    html_doctype = False
    doctype = _DOCTYPE.match(text, at)
    if doctype:
        html_doctype = doctype.group(1).lower() == "html"
        at = _PROLOG.match(text, doctype.end()).end()
    element = _ELEMENT.match(text, at)
    if element is None:
        return html_doctype and at < len(text)
    name = element.group(1).lower()
    if name in _HTML_ROOTS:
        return True
    return html_doctype and name.rpartition(":")[2] not in _FEED_ROOTS


class _EndOfHead(Exception):
    pass


class _HeadLinks(HTMLParser):
    """Collects `<base href>` and the feed links of the head; stops at `<body>`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.feeds: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            raise _EndOfHead
        values = {name: value or "" for name, value in attrs}
        href = values.get("href", "").strip()
        if tag == "base" and href and self.base is None:
            self.base = href
        elif tag == "link" and href:
            rel = values.get("rel", "").lower().split()
            kind = values.get("type", "").split(";")[0].strip().lower()
            if "alternate" in rel and kind in FEED_TYPES:
                self.feeds.append(href)

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            raise _EndOfHead


def feed_links(body: bytes, page_url: str, content_type: str | None = None) -> list[str]:
    """The absolute http(s) URLs of the feeds the page advertises, in document order. Relative
    links resolve against the page's `<base href>`, if any, else the page's own URL."""
    _, text = html_to_unicode(content_type, body)
    parser = _HeadLinks()
    try:
        parser.feed(text)
        parser.close()
    except _EndOfHead:
        pass
    base = urljoin(page_url, parser.base) if parser.base else page_url
    links = []
    for href in parser.feeds:
        url = urljoin(base, href)
        if urlsplit(url).scheme in ("http", "https") and url not in links:
            links.append(url)
    return links
