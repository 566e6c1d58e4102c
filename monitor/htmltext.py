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
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    return _BREAKS.sub("\n", text).strip()


def html_to_text(html: str) -> str:
    parser = _Extractor()
    parser.feed(html)
    parser.close()
    return tidy("".join(parser.parts))
