"""Turn a feedparser entry into an Item: identity, canonical link, clean text, UTC date.

Identity, in order of preference: the entry's guid; else its canonical link; else a hash of its
title and text. It is unique per source in the store. Besides it, an item carries `keys`: every
name under which the same item may come back from the same source — its guid, its canonical
link, and the path of either without the host — so that a publisher that changes its GUID
scheme (BBC appended `#0`) or moves domains (bbc.co.uk → bbc.com) is still recognised.
`content_hash` changes whenever what a reader would see changes (title, link, text), which is
how an edited item is recognised.

Feed-specific link forms are undone here: FeedBurner's redirect is replaced by the entry's
`feedburner:origLink`, and a Google News item's " - Publisher" title suffix is moved to
`publisher`, taken from its `<source>` element.

Pure: no I/O.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from w3lib.url import canonicalize_url

from monitor.htmltext import html_to_text, tidy
from monitor.match import Document

MAX_TITLE = 1_000
MAX_SUMMARY = 10_000
MAX_CONTENT = 50_000

# Query parameters that track the reader rather than identify the page.
TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "igshid",
    "mc_cid", "mc_eid", "_ga", "_gl", "traffic_source", "ref", "ref_src", "ref_url", "cmpid",
    "ocid", "smid", "smtyp", "sr_share", "spm", "share", "feature", "rss", "from_rss",
    "outputtype", "mkt_tok", "vero_id", "oly_enc_id", "oly_anon_id", "__twitter_impression",
})
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_")


@dataclass(frozen=True)
class Item:
    identity: str
    guid: str | None
    url: str | None
    canonical_url: str | None
    title: str
    summary: str
    content: str
    published_at: datetime | None
    language: str | None
    author: str | None
    content_hash: str
    keys: tuple[str, ...] = ()
    publisher: str | None = None  # the outlet, when the feed is an aggregator that names it

    def document(self, **metadata: Any) -> Document:
        """The item as the matcher sees it, with the feed's metadata given by the caller."""
        return Document(title=self.title, summary=self.summary, content=self.content,
                        url=self.canonical_url or self.url or "", lang=self.language or "",
                        **metadata)


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMS or lowered.startswith(TRACKING_PREFIXES)


# A URL w3lib's canonicalize_url gives back unchanged (tests/test_fastfeed.py proves it on
# generated ones): a lowercase ASCII host, no port, a path of unreserved characters with no
# dot segments, no query.
_ALREADY_CANONICAL = re.compile(
    r"https?://[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"(?:(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+/?|/)")
# A query whose parameter names parse_qsl would read as they are written.
_TRACKING_QUERY = re.compile(r"[A-Za-z0-9_.-]*(?:=[^\s&#]*)?(?:&[A-Za-z0-9_.-]*(?:=[^\s&#]*)?)*")


def canonical_url(url: str | None) -> str | None:
    """The link without tracking parameters, fragment or default port, in canonical form."""
    if not url:
        return None
    return _canonical_url(url)


@functools.lru_cache(maxsize=8192)  # a feed's guid is often its link; a re-poll repeats both
def _canonical_url(url: str) -> str | None:
    plain, _, query = url.partition("?")
    if _ALREADY_CANONICAL.fullmatch(plain) and (
            not query or _TRACKING_QUERY.fullmatch(query) and all(
                _is_tracking(p.partition("=")[0]) for p in query.split("&") if p)):
        return plain  # what _canonicalize would give: no port, and no query it would keep
    return _canonicalize(url)


def _canonicalize(url: str) -> str | None:
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:
        return None
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) \
        else f"{host}:{port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not _is_tracking(k)])
    path = parts.path or "/"
    if host == "news.google.com" and path.startswith("/rss/articles/"):
        query = ""  # `oc=5` and `hl=…` vary by search; the article id is the path
    url = urlunsplit((scheme, netloc, path, query, ""))
    return url if _ALREADY_CANONICAL.fullmatch(url) else canonicalize_url(url)


# Shortest host-less path worth a key of its own: "/" or "/news" name no single article.
MIN_PATH_KEY = 8


def _locator(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def names_an_article(url: str | None) -> bool:
    """A link that can identify one item: not a site's root or a short section page, which
    feeds use as the link of every item."""
    return bool(url) and len(_locator(url)) >= MIN_PATH_KEY  # type: ignore[arg-type]


def _url_keys(url: str | None) -> list[str]:
    """The canonical URL, and its path without the host (which survives a domain move)."""
    locator = _locator(url) if url else ""
    if len(locator) < MIN_PATH_KEY:  # as names_an_article, without splitting the URL twice
        return []
    return [f"url:{url}", f"path:{locator}"]


def item_keys(guid: str | None, canonical: str | None) -> tuple[str, ...]:
    keys = [f"guid:{guid}"] + _url_keys(canonical_url(guid)) if guid else []
    keys += _url_keys(canonical)
    return tuple(dict.fromkeys(keys))


def _identity(guid: str | None, keys: tuple[str, ...], title: str, text: str) -> str:
    if guid:
        return _digest("guid", guid)
    url = next((k for k in keys if k.startswith("url:")), None)
    if url:
        return _digest("url", url[4:])
    return _digest("text", title, text)


def without_keys(item: Item, dropped: set[str]) -> Item:
    """The item with some keys found not to identify it (a link several items of one feed
    share); an identity that came from such a link falls back to the text."""
    keys = tuple(k for k in item.keys if k not in dropped)
    identity = _identity(item.guid, keys, item.title, item.summary or item.content)
    return replace(item, keys=keys or (f"text:{identity}",), identity=identity)


def _publisher(entry: Any, title: str) -> tuple[str, str | None]:
    """Split an aggregator's "Headline - Publisher" title using the entry's <source>."""
    source = entry.get("source") or {}
    name = (source.get("title") or "").strip() if isinstance(source, dict) else ""
    if not name:
        return title, None
    for separator in (" - ", " | ", " – ", " — "):
        if title.endswith(separator + name):
            return title[: -len(separator + name)].rstrip(), name
    return title, name


def _text(detail: Any, value: str | None, limit: int) -> str:
    if not value:
        return ""
    kind = (detail or {}).get("type", "text/html") if isinstance(detail, dict) else "text/html"
    text = html_to_text(value) if "html" in kind else tidy(value)
    return unicodedata.normalize("NFC", text)[:limit]


def _date(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = dict.get(entry, key)  # plain get: feedparser's aliasing warns and guesses
        if parsed:
            try:
                return datetime.fromtimestamp(calendar.timegm(parsed), tz=UTC)
            except (OverflowError, ValueError, OSError, TypeError):
                continue
    return None


def _digest(*parts: str | None) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update((part or "").encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def normalize_entry(entry: Any, *, feed_language: str | None = None) -> Item:
    title = _text(entry.get("title_detail"), entry.get("title"), MAX_TITLE).replace("\n", " ")
    summary = _text(entry.get("summary_detail"), entry.get("summary"), MAX_SUMMARY)
    content = ""
    for part in entry.get("content") or ():
        text = _text(part, part.get("value"), MAX_CONTENT)
        if len(text) > len(content):
            content = text
    if content == summary:
        content = ""
    title, publisher = _publisher(entry, title)
    link = (entry.get("feedburner_origlink") or entry.get("link") or "").strip() or None
    canonical = canonical_url(link)
    guid = (entry.get("id") or "").strip() or None
    keys = item_keys(guid, canonical)
    identity = _identity(guid, keys, title, summary or content)
    author = (entry.get("author") or "").strip()[:200] or None
    language = entry.get("language") or feed_language
    return Item(identity=identity, guid=guid, url=link, canonical_url=canonical, title=title,
                summary=summary, content=content, published_at=_date(entry),
                language=language[:35] if language else None, author=author,
                content_hash=_digest(title, canonical or link, summary, content),
                keys=keys or (f"text:{identity}",), publisher=publisher)
