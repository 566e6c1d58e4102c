"""Text as the matcher sees it: folded, tokenised, and searchable for terms.

Folding makes matching insensitive to case, accents and compatibility forms (`Perú` → `peru`,
full-width `ＣＯＳＣＯ` → `cosco`). Words in spaced scripts are matched whole; scripts written
without spaces between words (Chinese, Japanese, Korean, Thai, …) are matched as substrings of a
"dense" copy of the text with spaces and punctuation removed, because `\\b` means nothing there.

Pure functions only: no I/O, no rules. `monitor.match` builds on this; renderers use `locate`
to find where terms fired in the original text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from functools import lru_cache

# Scripts written without spaces between words. Hangul is spaced, but Korean glues particles to
# nouns (중국은, 중국의), so substring matching serves it better. Hangul syllables decompose to
# jamo under NFKD, hence the jamo ranges.
_UNSPACED = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1100-\u11ff"  # Hangul jamo
    "\u1780-\u17ff"  # Khmer
    "\u2e80-\u2fdf"  # CJK radicals
    "\u3005-\u3007\u3021-\u3029\u3031-\u3035\u3038-\u303c"
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u31ff"  # Bopomofo, compatibility jamo, Katakana extensions
    "\u3400-\u4dbf\u4e00-\u9fff"  # CJK ideographs
    "\ua960-\ua97f\uac00-\ud7ff"  # Hangul
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\U00020000-\U0003134f"  # CJK extensions B+
)
_SPACED_WORD = re.compile(rf"[^\W_{_UNSPACED}]+")
_UNSPACED_CHAR = re.compile(rf"[{_UNSPACED}]")
_NON_WORD = re.compile(r"[\W_]+")


# Folding is on the hot path of matching, so it takes the fastest way the text allows. After
# NFKD, text that holds nothing but ASCII and the Latin combining accents (most Latin-script
# news) folds by dropping every non-ASCII character; text whose only combining marks can be
# those accents (Latin, Greek, Cyrillic letters, punctuation, CJK, kana, Hangul) by removing
# them with one pattern; anything else by testing each character.
_LATIN_ACCENTS = re.compile("[\u0300-\u036f]+")
_BEYOND_LATIN_ACCENTS = re.compile("[^\x00-\x7f\u0300-\u036f]")
_OTHER_MARKS_POSSIBLE = re.compile(
    "[^\x00-\u0482\u048a-\u0590\u2000-\u20cf\u2100-\u2cee\u2e00-\u3029\u3030-\u3098"
    "\u309b-\ua66e\uac00-\ud7ff\uf900-\ufb1d\ufb1f-\ufe1f\ufe30-\uffff]")


def fold(text: str) -> str:
    """Case-, accent- and width-insensitive form of `text`."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    if _BEYOND_LATIN_ACCENTS.search(decomposed) is None:
        return decomposed.encode("ascii", "ignore").decode("ascii").lower()
    if _OTHER_MARKS_POSSIBLE.search(decomposed) is None:
        return _LATIN_ACCENTS.sub("", decomposed).casefold()
    combining = unicodedata.combining
    kept = "".join(c for c in decomposed if not combining(c))
    return _LATIN_ACCENTS.sub("", kept).casefold()  # U+034F too, as on the faster paths


@lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    return fold(c)


def fold_with_map(text: str) -> tuple[str, list[int]]:
    """Fold `text` and return, for each folded character, the index of its source character."""
    out: list[str] = []
    index: list[int] = []
    for i, c in enumerate(text):
        folded = _fold_char(c)
        out.append(folded)
        index.extend([i] * len(folded))
    return "".join(out), index


def has_unspaced(text: str) -> bool:
    return _UNSPACED_CHAR.search(text) is not None


# In ASCII text a word is a run of letters and digits: everything else becomes a space.
_ASCII_BREAKS = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})


def words(folded: str) -> list[str]:
    """Whole words of spaced scripts in already folded text."""
    if folded.isascii():
        return folded.translate(_ASCII_BREAKS).split()
    return _SPACED_WORD.findall(folded)


# Most Latin-script news is Latin-1, and there splitting into words, folded or as written, can
# be one pass over the bytes. Folding works character by character (NFKD only reorders
# combining marks, which it drops), so each byte is replaced by its folded form, with anything
# that is not part of a word as a space; Latin-1 text is already composed (NFC) and holds no
# combining accent, so as written each byte stays itself or becomes a space. The few characters
# that fold to several (ß → ss, ½ → 1⁄2) or beyond Latin-1 (µ → μ) map to NUL, which sends the
# text the general way.
def _latin1_table(form: Callable[[str], str]) -> bytes:
    def byte(code: int) -> int:
        out = "".join(c if _SPACED_WORD.fullmatch(c) else " " for c in form(chr(code)))
        if not out.strip():
            return ord(" ")
        return ord(out) if len(out) == 1 and ord(out) < 256 else 0
    return bytes(map(byte, range(256)))


_LATIN1_FOLDED = _latin1_table(fold)
_LATIN1_WRITTEN = _latin1_table(lambda c: c)


def _latin1_words(text: str, table: bytes) -> list[str] | None:
    """The words of Latin-1 text, folded or as written by the table; None for other text."""
    encoded = text.encode("latin-1", "ignore")
    if len(encoded) != len(text):
        return None
    mapped = encoded.translate(table)
    return None if b"\x00" in mapped else mapped.decode("latin-1").split()


def written_words(text: str) -> list[str]:
    """Words as written (for exact terms): composed (NFC), with the accents that cannot be
    composed into their letter dropped, so they split into the same words as the folded text."""
    found = _latin1_words(text, _LATIN1_WRITTEN)
    if found is not None:
        return found
    return words(_LATIN_ACCENTS.sub("", unicodedata.normalize("NFC", text)))


def dense(folded: str) -> str:
    """Folded text with everything but letters and digits removed."""
    return _NON_WORD.sub("", folded)


@dataclass(frozen=True)
class Term:
    """A word or phrase to find: whole words in order, or a substring in unspaced scripts.

    `prefix`: the last word only has to start with what is given (`port*`). `exact`: the words
    must appear as written, case and accents included (`=FTA`)."""

    text: str  # as the user wrote it, for explanations
    words: tuple[str, ...] = ()
    substring: str | None = None
    prefix: bool = False
    exact: bool = False
    written: tuple[str, ...] = ()  # the words as written, for exact terms
    # The engine's name for the term, one per thing to find: a single folded word as itself;
    # folded words joined by single spaces, wrapped in spaces (" w1 w2 ") or, for a prefix,
    # opened only (" w1 w"); a folded dense substring after "~". An exact term is named the
    # same way from its words (or dense text) as written, after "=".
    key: str = dc_field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.substring is not None:
            key = "~" + self.substring
        else:
            words = self.written if self.exact else self.words
            if len(words) == 1 and not self.prefix:
                key = words[0]
            else:
                key = " " + " ".join(words) + ("" if self.prefix else " ")
        object.__setattr__(self, "key", "=" + key if self.exact else key)

    @classmethod
    def parse(cls, text: str, *, prefix: bool = False, exact: bool = False) -> Term:
        folded = fold(text)
        if has_unspaced(folded):
            if exact:
                return cls(text=text, substring=dense(unicodedata.normalize("NFC", text)),
                           exact=True)
            return cls(text=text, substring=dense(folded))
        written = tuple(written_words(text)) if exact else ()
        return cls(text=text, words=tuple(words(folded)), prefix=prefix, exact=exact,
                   written=written)

    @property
    def empty(self) -> bool:
        return not self.words and not self.substring


Span = tuple[int, int]  # [start, end) in words, or in characters of the dense text


def _indexes(tokens: list[str], word: str) -> list[int]:
    """Every index of `word` in `tokens` (list.index searches in C)."""
    found: list[int] = []
    at = -1
    try:
        while True:
            at = tokens.index(word, at + 1)
            found.append(at)
    except ValueError:
        return found


class Field:
    """One analysed text field (title, summary or content) of an item."""

    __slots__ = ("text", "words", "dense", "_written", "_written_dense")

    def __init__(self, text: str):
        self.text = text
        latin1 = _latin1_words(text, _LATIN1_FOLDED)
        if latin1 is not None:
            self.words, self.dense = latin1, ""  # no unspaced script in Latin-1
        else:
            folded = fold(text)
            self.words = words(folded)
            self.dense = dense(folded) if not folded.isascii() and has_unspaced(folded) else ""
        self._written: list[str] | None = None
        self._written_dense: str | None = None

    def written(self) -> list[str]:
        if self._written is None:
            self._written = written_words(self.text)
        return self._written

    def written_dense(self) -> str:
        if self._written_dense is None:
            self._written_dense = dense(unicodedata.normalize("NFC", self.text))
        return self._written_dense

    def occurrences(self, term: Term) -> list[Span]:
        """Where `term` occurs: word spans, or character spans of the dense text."""
        if term.substring is not None:
            haystack = self.written_dense() if term.exact else self.dense
            found, width = [], len(term.substring)
            start = haystack.find(term.substring) if haystack else -1
            while start != -1:
                found.append((start, start + width))
                start = haystack.find(term.substring, start + 1)
            return found
        if term.exact:
            if len(term.written) != len(term.words):
                return []  # cannot be written as those words (the parser refuses such terms)
            return self._sequence(self.written(), list(term.written), False)
        if term.prefix or len(term.words) > 1:
            return self._sequence(self.words, list(term.words), term.prefix)
        return [(i, i + 1) for i in _indexes(self.words, term.words[0])]

    def _sequence(self, tokens: list[str], want: list[str], prefix: bool) -> list[Span]:
        n, width = len(tokens), len(want)
        last = width - 1
        if width == 1 and not prefix:
            return [(i, i + 1) for i in _indexes(tokens, want[0])]
        starts = range(n - width + 1) if prefix and width == 1 else _indexes(tokens, want[0])
        found = []
        for start in starts:
            if start + width > n:
                continue
            if all(tokens[start + k] == want[k] for k in range(last)) and (
                    tokens[start + last].startswith(want[last]) if prefix
                    else tokens[start + last] == want[last]):
                found.append((start, start + width))
        return found

    def contains(self, term: Term) -> bool:
        return bool(self.occurrences(term))


def locate(text: str, terms: list[Term]) -> list[tuple[int, int]]:
    """Character spans in the original `text` where any of `terms` occurs, sorted, merged."""
    folded, index = fold_with_map(text)
    spans: list[tuple[int, int]] = []
    tokens = [(m.group(), m.start(), m.end()) for m in _SPACED_WORD.finditer(folded)]
    # The dense copy, keeping where each of its characters came from.
    kept = [i for i, c in enumerate(folded) if not _NON_WORD.fullmatch(c)]
    haystack = "".join(folded[i] for i in kept)
    for term in terms:
        if term.substring:
            start = haystack.find(term.substring)
            while start != -1:
                first = kept[start]
                last = kept[start + len(term.substring) - 1]
                spans.append((index[first], index[last] + 1))
                start = haystack.find(term.substring, start + 1)
        elif term.words:
            width = len(term.words)
            for i in range(len(tokens) - width + 1):
                if all(tokens[i + k][0] == term.words[k] for k in range(width)):
                    first = tokens[i][1]
                    last = tokens[i + width - 1][2] - 1
                    spans.append((index[first], index[last] + 1))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
