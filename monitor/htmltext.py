"""Plain text out of the HTML that feeds carry, for matching and for display.

Feed HTML is untrusted: this keeps only character data, drops scripts, styles and comments, and
turns block elements into line breaks so words from two paragraphs never run together.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = {"p", "div", "br", "li", "ul", "ol", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5",
          "h6", "blockquote", "pre", "section", "article", "header", "footer", "figure",
          "figcaption", "table", "hr", "dd", "dt"}
_SKIP = {"script", "style", "template", "noscript", "head", "title", "iframe", "object"}
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")
_BREAKS = re.compile(r"\s*\n\s*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Markup of attribute-less tags, none skipped, and text without references: the parser would
# give the text as it is, with a line break for each block tag (tests prove it).
_TAG = re.compile(r"</?([a-z][a-z0-9]{0,9})>")
_PLAIN_MARKUP = re.compile(rf"[^<>&]*+(?:</?(?!(?:{'|'.join(sorted(_SKIP))})>)[a-z][a-z0-9]{{0,9}}>"
                           r"[^<>&]*+)*+")
# Characters the substitutions of `tidy` remove or replace even when alone.
_ODD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\t\r\f\v\u00a0\u200b]")


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skipping += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def tidy(text: str) -> str:
    """Collapse runs of spaces, keep single line breaks, drop control characters."""
    if "\n" not in text and "  " not in text and _ODD.search(text) is None:
        return text.strip()  # nothing for the substitutions to change
    return _collapse(text)


def _collapse(text: str) -> str:
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    return _BREAKS.sub("\n", text).strip()


def html_to_text(html: str) -> str:
    if "<" not in html and "&" not in html:
        return tidy(html)  # no markup and no references: the parser would pass it through
    if _PLAIN_MARKUP.fullmatch(html):
        return tidy(_TAG.sub(lambda tag: "\n" if tag[1] in _BLOCK else "", html))
    return _extract(html)


def _extract(html: str) -> str:
    parser = _Extractor()
    parser.feed(html)
    parser.close()
    return tidy("".join(parser.parts))
