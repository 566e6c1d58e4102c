"""A fast parse path for well-formed UTF-8 RSS 2.0 (and 0.91/0.92), giving what feedparser gives.

`read()` parses with the stdlib's C ElementTree (on the same expat as feedparser's strict
parser, so well-formedness is decided alike) and returns the feed's fields, its entries in the
shape `normalize_entry` reads and the problem feedparser would report; or None whenever it is
not sure of giving exactly what feedparser would, and the caller then uses feedparser.

It does what feedparser 6's handlers do for the elements it knows (names by namespace URI,
which duplicate wins, links resolved against the feed URL and `xml:base`, a permalink guid as
the link, a second description as content, titles as text unless they look like HTML, HTML
resolved and sanitised, doubly-encoded UTF-8 repaired, C1 controls read as windows-1252) and
refuses any other element feedparser has a handler for. Also refused: a DOCTYPE or ENTITY
anywhere; a charset other than UTF-8 (or US-ASCII on ASCII bytes) in the BOM, the declaration
or the Content-Type; bytes that are not strict UTF-8; what ElementTree cannot parse; a root
other than `<rss>` holding one `<channel>`; handled elements with children or odd attributes.

It uses feedparser's internals (dates, sanitiser, URL helpers, handler names), which our
`feedparser<7` pin keeps stable; tests/test_fastfeed.py proves both paths give the same.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
import xml.sax
from dataclasses import dataclass, field
from typing import Any

import feedparser
from feedparser.api import PREFERRED_XML_PARSERS, StrictFeedParser
from feedparser.datetimes import _parse_date
from feedparser.encodings import RE_XML_PI_ENCODING, parse_content_type
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.sanitizer import _sanitize_html
from feedparser.urls import _urljoin, make_safe_absolute_uri, resolve_relative_uris
from feedparser.util import FeedParserDict

Feed = tuple[dict[str, Any], list[dict[str, Any]], str | None]  # fields, entries, problem

# feedparser uses libxml2's SAX driver when it is installed; we only match expat's.
_EXPAT = type(xml.sax.make_parser(PREFERRED_XML_PARSERS)).__module__ == "xml.sax.expatreader"
_NAMESPACES = {uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()}
_HTML_TYPES = _FeedParserMixin.html_types
_map_type = _FeedParserMixin.map_content_type
_looks_like_html = _FeedParserMixin.looks_like_html
_DECLARATIONS = re.compile(rb"<!(?i:doctype|entity)")
_WIDE = (b"\x4c\x6f\xa7\x94", b"\x00\x3c\x00\x3f", b"\x3c\x00\x3f\x00",  # EBCDIC, UTF-16/32
         b"\x00\x00\x00\x3c", b"\x3c\x00\x00\x00")
_C1 = re.compile("[\x80-\x9f]")
_XLINK = "http://www.w3.org/1999/xlink"
_AMPERSAND = re.compile("&([A-Za-z0-9_]+);")
# HTML that feedparser's URI resolver and sanitiser give back unchanged: text without <, > or
# &, and these tags without attributes (tests prove it on generated HTML).
_SIMPLE_TAGS = ("p", "b", "i", "u", "em", "strong", "small", "sub", "sup", "blockquote", "ul",
                "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "div", "span", "code", "pre",
                "q", "cite", "abbr", "dl", "dt", "dd")
_SIMPLE_HTML = re.compile(rf"[^<>&]*+(?:</?(?:{'|'.join(_SIMPLE_TAGS)})>[^<>&]*+)*+")
# An absolute http(s) URL that feedparser's `_urljoin` gives back unchanged, whatever the
# (parsable) base: ASCII host, no `;` params, no empty query or fragment, no whitespace or
# controls (tests prove it on generated URLs).
_ABSOLUTE = re.compile(r"https?://[A-Za-z0-9._~%!$&'()*+,=:@-]+(?:/[^\x00-\x20\x7f?#;]*)?"
                       r"(?:\?[^\x00-\x20\x7f#]+)?(?:#[^\x00-\x20\x7f]+)?")

# What each handled element is, by feedparser's handler name (`_start_<key>`).
_TITLES = {"title", "dc_title", "media_title"}
_DESCRIPTIONS = {"description", "dc_description", "media_description"}
_CONTENTS = {"content_encoded", "fullitem"}
_AUTHORS = {"author", "dc_creator", "dc_author", "managingeditor", "itunes_author"}
_LANGUAGES = {"language", "dc_language"}
_GUIDS = {"guid", "id"}
_DATES = {**dict.fromkeys(("pubdate", "published", "issued", "dcterms_issued"), "published_parsed"),
          **dict.fromkeys(("updated", "modified", "lastbuilddate", "dc_date", "dcterms_modified"),
                          "updated_parsed"),
          **dict.fromkeys(("created", "dcterms_created"), "created_parsed")}
# Handled elements whose effects reach none of the fields we read (tags, media, rights,
# publisher, expiry) and that change no state the others depend on.
_INERT = {"category", "dc_subject", "media_category", "media_keywords", "enclosure",
          "media_thumbnail", "media_credit", "media_rating", "media_restriction",
          "media_license", "media_player", "expirationdate", "copyright", "rights",
          "dc_rights", "webmaster", "dc_publisher", "generator"}
_CHANNEL_INERT = _INERT | _DESCRIPTIONS | _AUTHORS | set(_DATES) | {
    "subtitle", "tagline", "info", "feedburner_browserfriendly", "cloud"}
_MEDIA_CONTAINERS = {"media_group", "media_content"}  # their children count as the item's
_BOX_CHILDREN = {"image": {"url", "title", "link", "width", "height", "description"},
                 "textinput": {"title", "link", "description", "name"}}
# Entry keys normalize_entry reads: an unhandled element stored under one of them is refused.
_ENTRY_KEYS = {"title", "title_detail", "summary", "summary_detail", "content", "link",
               "feedburner_origlink", "id", "author", "language", "source", *_DATES.values()}
_PLAIN_ATTRIBUTES = {"xml:base", "base", "xml:lang", "lang"}


class _Refuse(Exception):
    """feedparser would do something here that this module does not reproduce."""


def read(body: bytes, *, url: str, content_type: str) -> Feed | None:
    """The feed's fields (title, link, language, ttl), its entries and the problem feedparser
    would report, given `body` with this Content-Location and Content-Type — or None."""
    charset = _charset(body, content_type)
    if charset is None or not (_EXPAT and url and feedparser.SANITIZE_HTML
                               and feedparser.RESOLVE_RELATIVE_URIS):
        return None
    parser = ET.XMLPullParser(events=("start-ns", "start"))
    try:
        parser.feed(charset[0])
        parser.close()
        root, declared, pending = None, {}, []
        for event, value in parser.read_events():
            if event == "start-ns":
                if value[1] == _XLINK:
                    return None  # feedparser passes it on as the next element's attribute
                pending.append(value)
            else:
                root = value if root is None else root
                if pending:
                    declared[value], pending = pending, []
        reader = _Reader(url, declared)
        reader.rss(root)
    except Exception:  # noqa: BLE001 - _Refuse, ParseError, or what feedparser raises too
        return None
    return reader.feed, reader.entries, charset[1]


def _charset(body: bytes, content_type: str) -> tuple[bytes, str | None] | None:
    """The bytes to parse and feedparser's complaint about their charset, as its
    `convert_to_utf8` decides them, if they are UTF-8 (or ASCII) whatever it tries first."""
    if _DECLARATIONS.search(body):
        return None  # feedparser strips or rewrites these; entity expansion is its business
    data = body.removeprefix(codecs.BOM_UTF8)
    bom = "utf-8" if len(data) != len(body) else ""
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or data[:4] in _WIDE:
        return None
    try:
        data.decode("utf-8")
        match = RE_XML_PI_ENCODING.match(data)
        xml_encoding = match.group(1).decode("utf-8").lower() if match else ""
    except UnicodeDecodeError:
        return None
    if xml_encoding and not _utf8(xml_encoding, data):
        return None  # expat reads the declaration itself
    media_type, http_encoding = parse_content_type(content_type)
    family, _, subtype = media_type.partition("/")  # case counts, as it does to feedparser
    xml = subtype.endswith("+xml") or subtype in ("xml", "xml-external-parsed-entity")
    if family == "application" and (xml or subtype == "xml-dtd"):
        declared = http_encoding or xml_encoding or "utf-8"  # RFC 3023, as feedparser reads it
    elif family == "text" and xml:
        declared = http_encoding or "us-ascii"
    else:
        return None  # feedparser flags a type that is not XML
    for encoding in dict.fromkeys(e for e in (declared, xml_encoding, bom) if e):
        if same := _utf8(encoding, data):
            return data, None if encoding == declared else (
                f"CharacterEncodingOverride: document declared as {declared}, "
                f"but parsed as {encoding}")
        if same is None:
            return None  # another charset would decode these bytes as something else
    return None  # feedparser would go on to guess with chardet


def _utf8(label: str, data: bytes) -> bool | None:
    """Whether these bytes (UTF-8) read the same in this charset; False if it cannot read
    them or Python does not know it, None if it would read them otherwise."""
    try:
        codec = codecs.lookup(label).name
    except LookupError:
        return False
    return codec == "utf-8" or data.isascii() if codec in ("utf-8", "ascii") else None


def _fix(text: str) -> str:
    """What feedparser does to every value last: undo UTF-8 read as Latin-1, then map C1
    controls to the windows-1252 characters they stand for."""
    if text.isascii():
        return text
    try:
        text = text.encode("iso-8859-1").decode("utf-8")
    except UnicodeError:
        pass
    return text.translate(_cp1252) if _C1.search(text) else text


def _attributes(attrib: dict[str, str]) -> dict[str, str]:
    """An element's attributes as feedparser's strict parser names them: under a known
    namespace's prefix, and each again under its local name; `rel` and `type` lowercased."""
    if not attrib:
        return {}
    named: dict[str, str] = {}
    for name, value in attrib.items():
        uri, _, local = name[1:].rpartition("}") if name[:1] == "{" else ("", "", name)
        if prefix := _NAMESPACES.get(uri.lower(), ""):
            named[f"{prefix}:{local}".lower()] = value
    bare = {name.rpartition("}")[2].lower(): value for name, value in attrib.items()}
    if len(bare) < len(attrib):
        raise _Refuse  # two share a local name: which one feedparser keeps depends on order
    return {k: v.lower() if k in ("rel", "type") else v for k, v in (named | bare).items()}


def _unreference(link: str) -> str:
    """feedparser's repair of `?a=1&b;=2`, links whose `&b=` was taken for a reference."""
    return _AMPERSAND.sub(r"&\g<1>", link) if "&" in link else link


@dataclass
class _Entry:
    """One item as feedparser builds it, with the depth each key was stored from (a value from
    deeper down does not replace one from higher up)."""

    values: dict[str, Any] = field(default_factory=dict)
    depths: dict[str, int] = field(default_factory=dict)
    has_content: bool = False

    def store(self, key: str, value: str, depth: int) -> None:
        if self.depths.get(key, depth) >= depth:
            self.depths[key] = depth
            self.values[key] = value


class _Reader:
    """feedparser's state while it reads one document, for the elements we reproduce."""

    def __init__(self, url: str, declared: dict[ET.Element, list[tuple[str, str]]]) -> None:
        self.declared = declared  # namespaces each element declares, tracked when it is met
        self.namespacemap: dict[str | None, str] = {}
        self.in_use: dict[str, str] = {}
        self.keys: dict[str, tuple[str, bool]] = {}
        self.bases: dict[tuple[str, str], str] = {}
        self.parsable: dict[str, bool] = {}
        self.url = url
        self.title_depth = -1  # feedparser keeps the first non-empty title at this depth
        self.feed: dict[str, Any] = {}
        self.entries: list[dict[str, Any]] = []

    def track_namespace(self, prefix: str | None, uri: str) -> None:
        lowered = uri.lower()
        if "backend.userland.com/rss" in lowered:
            uri = lowered = "http://backend.userland.com/rss"
        if lowered in _NAMESPACES:
            self.namespacemap[prefix] = _NAMESPACES[lowered]
            self.in_use[_NAMESPACES[lowered]] = uri
        else:
            self.in_use[prefix or ""] = uri

    def key(self, element: ET.Element) -> tuple[str, bool]:
        """feedparser's name for an element (`dc_creator`, `title`) and whether it has a
        handler for it, with the namespaces declared so far in document order."""
        if self.declared and element in self.declared:
            for prefix, uri in self.declared.pop(element):
                if uri:
                    self.track_namespace(prefix or None, uri)
            self.keys.clear()
        known = self.keys.get(element.tag)
        if known is None:
            tag = element.tag
            uri, _, local = tag[1:].rpartition("}") if tag[:1] == "{" else ("", "", tag)
            if "backend.userland.com/rss" in uri.lower():
                uri = "http://backend.userland.com/rss"
            prefix = _NAMESPACES.get(uri.lower()) if uri else ""
            name = local.lower()
            if prefix:
                name = f"{prefix.lower()}:{name}"
            elif uri:  # a namespace feedparser does not know goes by the document's prefix
                name = next((f"{p}:{name}" for p, u in self.in_use.items() if p and u == uri),
                            name)
            prefix, suffix = name.lower().split(":", 1) if ":" in name else ("", name.lower())
            prefix = self.namespacemap.get(prefix, prefix)
            key = f"{prefix}_{suffix}" if prefix else suffix
            known = self.keys[tag] = (key, hasattr(StrictFeedParser, f"_start_{key}")
                                      or hasattr(StrictFeedParser, f"_end_{key}"))
        return known

    def base(self, current: str, attributes: dict[str, str]) -> str:
        """An element's base URI, from its parent's and its `xml:base`, as feedparser
        recomputes it at every element."""
        given = attributes and attributes.get("xml:base", attributes.get("base")) or current
        found = self.bases.get((current, given))
        if found is None:
            found = self.bases[current, given] = make_safe_absolute_uri(current, given) or current
        return found

    def resolve(self, base: str, uri: str) -> str:
        """feedparser's `_urljoin`, skipped for a URL it would give back as it is."""
        if _ABSOLUTE.fullmatch(uri):
            if base not in self.parsable:  # `_urljoin` answers '' to a base urllib cannot parse
                self.parsable[base] = bool(_urljoin(base, "x"))
            if self.parsable[base]:
                return uri
        return _urljoin(base, uri)

    # The document ----------------------------------------------------------------------------

    def rss(self, root: ET.Element) -> None:
        if self.key(root)[0] != "rss" or len(root) != 1 or self.key(root[0])[0] != "channel":
            raise _Refuse  # (the root's namespaces are tracked before its child's name is read)
        attributes = _attributes(root.attrib)
        if language := attributes.get("xml:lang", attributes.get("lang")):
            self.feed["language"] = language.replace("_", "-")
        base = self.base(self.url, attributes)
        attributes = _attributes(root[0].attrib)
        if {"lastmod", "href"} & attributes.keys():
            raise _Refuse  # feedparser reads these as the feed's date and link
        self.channel(root[0], self.base(base, attributes))

    def channel(self, channel: ET.Element, base: str) -> None:
        for element in channel:
            key, handled = self.key(element)
            if key in _CHANNEL_INERT and not len(element):
                continue
            attributes = _attributes(element.attrib)
            here = self.base(base, attributes)
            if key == "item":
                self.item(element, here, attributes)
            elif key in _BOX_CHILDREN:
                self.box(element, key, here)
            elif not handled:
                self.unhandled(element)
            elif len(element):
                raise _Refuse
            elif key in _TITLES:
                value = self.content(element.text, attributes, "text/plain", here)[0]
                if self.title(key, value, 3):
                    self.feed["title"] = value
            elif key == "link":
                if link := self.link(element.text, attributes, here):
                    self.feed["link"] = link[0] if link[1] else _unreference(link[0])
            elif key in _LANGUAGES:
                self.feed["language"] = _fix((element.text or "").strip())
            else:
                raise _Refuse

    def box(self, box: ET.Element, key: str, base: str) -> None:
        """A channel's image or text input: its title and link are its own, but its title
        moves feedparser's title depth."""
        self.title_depth = -1
        for element in box:
            child = self.key(element)[0]
            if child not in _BOX_CHILDREN[key] or len(element):
                raise _Refuse
            if child == "title":
                attributes = _attributes(element.attrib)
                value = self.content(element.text, attributes, "text/plain",
                                     self.base(base, attributes))[0]
                self.title(child, value, 4)

    def unhandled(self, top: ET.Element, entry: _Entry | None = None, depth: int = 0) -> None:
        """An element feedparser has no handler for is stored under its name, and so is each
        inside it (none may have a handler): only `ttl` and `feedburner:origLink` matter."""
        for element in top.iter():
            key, handled = self.key(element)
            stored = FeedParserDict.keymap.get(key, key)
            if handled or key in ("ttl", "feedburner_origlink") and len(element) or \
                    (stored[0] if isinstance(stored, list) else stored) in _ENTRY_KEYS and \
                    (element is not top or element.attrib or key != "feedburner_origlink"):
                raise _Refuse
            if key == "ttl" and entry is None:  # stored as its attributes if it has any
                text = _fix((element.text or "").strip())
                self.feed["ttl"] = _attributes(element.attrib) or text
            elif key == "feedburner_origlink" and entry is not None:
                entry.store(key, _fix((element.text or "").strip()), depth)

    # Items -----------------------------------------------------------------------------------

    def item(self, item: ET.Element, base: str, attributes: dict[str, str]) -> None:
        if attributes.keys() - _PLAIN_ATTRIBUTES:
            raise _Refuse  # rdf:about, lastmod and href would set the id, date and link
        entry = _Entry()
        self.title_depth = -1
        self.children(item, base, 4, entry)
        self.entries.append(entry.values)

    def children(self, parent: ET.Element, base: str, depth: int, entry: _Entry) -> None:
        for element in parent:
            key, handled = self.key(element)
            if key in _INERT and not len(element):
                continue  # nothing it does reaches a field we read
            if not handled:
                self.unhandled(element, entry, depth)
                continue
            attributes = _attributes(element.attrib)
            here = self.base(base, attributes)
            if key in _MEDIA_CONTAINERS and depth < 7:
                self.children(element, here, depth + 1, entry)
            elif len(element):
                raise _Refuse
            else:
                self.leaf(key, (element.text or "").strip(), attributes, here, depth, entry)

    def leaf(self, key: str, text: str, attributes: dict[str, str], base: str, depth: int,
             entry: _Entry) -> None:
        values = entry.values
        if key in _TITLES:
            value, kind = self.content(text, attributes, "text/plain", base)
            if self.title(key, value, depth):
                entry.store("title", value, depth)
                values["title_detail"] = {"type": kind}  # even when a higher one is kept
        elif key in _DESCRIPTIONS and "summary" in values and not entry.has_content:
            entry.has_content = True  # a second description is content
            value, kind = self.content(text, attributes, "text/plain", base)
            values.setdefault("content", []).append({"type": kind, "value": value})
        elif key in _DESCRIPTIONS:
            value, kind = self.content(text, attributes, "text/html", base)
            entry.store("summary", value, depth)
            values["summary_detail"] = {"type": kind}
        elif key in _CONTENTS:
            entry.has_content = True
            value, kind = self.content(text, attributes, "text/html", base)
            values.setdefault("content", []).append({"type": kind, "value": value})
            values.setdefault("summary", value)  # `content` allows no type it would not copy
        elif key == "link":
            if link := self.link(text, attributes, base):
                values["link"] = link[0] if link[1] else \
                    _unreference(link[0].replace("&amp;", "&"))
        elif key in _GUIDS:
            permalink = attributes.get("ispermalink", "true") == "true"
            value = _fix(self.resolve(base, text) if permalink and text else text)
            entry.store("id", value, depth)
            if permalink:
                values.setdefault("link", value)
        elif key in _AUTHORS or key in _LANGUAGES:
            entry.store("author" if key in _AUTHORS else "language", _fix(text), depth)
        elif key in _DATES:
            values[_DATES[key]] = _parse_date(_fix(text))
        elif key == "source":
            self.title_depth = -1
            values["source"] = {"href": attributes["url"]} if "url" in attributes else {}
            if text:
                values["source"]["title"] = _fix(text)
        elif key not in _INERT:
            raise _Refuse

    # Values ----------------------------------------------------------------------------------

    def title(self, key: str, value: str, depth: int) -> bool:
        """Whether feedparser keeps a title: not if a non-empty one was met at this depth or
        above since the last item, image, text input or source began (media:title leaves
        that depth as it was)."""
        kept = not -1 < self.title_depth <= depth
        if value and key != "media_title":
            self.title_depth = depth
        return kept

    def link(self, text: str | None, attributes: dict[str, str],
             base: str) -> tuple[str, bool] | None:
        """A link element's value and whether it came from an attribute (no clean-up then),
        or None when it names no alternate HTML page."""
        href = attributes.get("url", attributes.get("uri", attributes.get("href")))
        if not href and "href" not in attributes:
            value = (text or "").strip()
            return _fix(self.resolve(base, value) if value else value), False
        rel = attributes.get("rel", "alternate")
        kind = attributes.get("type", "application/atom+xml" if rel == "self" else "text/html")
        if rel == "alternate" and _map_type(kind) in _HTML_TYPES:
            return self.resolve(base, href or attributes["href"]), True
        return None

    def content(self, text: str | None, attributes: dict[str, str], default: str,
                base: str) -> tuple[str, str]:
        """A title's, description's or content's value and type, as feedparser's `pop`
        makes them: plain text that looks like HTML becomes HTML; HTML is resolved and
        sanitised."""
        kind = _map_type(attributes.get("type", default))
        if "mode" in attributes or kind not in ("text/plain", "text/html"):
            raise _Refuse  # base64, or XHTML, which feedparser escapes as it reads
        value = (text or "").strip()
        marked = "<" in value or "&" in value
        if kind == "text/plain" and marked and _looks_like_html(value):
            kind = "text/html"
        if kind == "text/html" and marked and not _SIMPLE_HTML.fullmatch(value):
            value = _sanitize_html(resolve_relative_uris(value, base, "utf-8", kind), "utf-8",
                                   kind)
        elif kind == "text/html":
            value = value.replace("\r\n", "\n")
        return _fix(value), kind
