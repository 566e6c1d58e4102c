"""Vetoes: why two items that share words cannot be one story.

`monitor.stories` scores how much two items say alike; a low threshold needs these vetoes. Items
in different languages are never one story (`language`: the script, then the commonest function
words). Nor are items whose titles state figures that no figure of the other item agrees with,
items dated a few days apart or on different weekdays, and template headlines that differ in
their filling (see `monitor.stories` for examples). Those facts are read from a fingerprint's
text when first needed, and cached by text: the same candidates come back for every new item on
a busy story.

Also here, because both sides read them: the stop words of each language (no feature, key or
template slot is made of them) and the figures a text states (features of their own).

Pure: no I/O, and nothing about features or scores.
"""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, NamedTuple

from monitor.text import fold, words

if TYPE_CHECKING:
    from monitor.stories import Fingerprint

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
STOPWORDS = frozenset("""
a about after against all also an and any are as at be because been before being between both
but by can could did do does during each for from further had has have having he her here his
how if in into is it its itself just more most new no nor not now of off on once only or other
our out over own same says said say she should so some such than that the their them then there
these they this those through to too under until up very was we were what when where which while
who whom why will with would you your
al algo algunas algunos ante antes como con contra cual cuando de del desde donde durante e el
ella ellas ellos en entre era es esa esas ese eso esos esta estaba estado estan estas este esto
estos fue fueron ha han hasta hay la las le les lo los mas me mi muy nada ni no nos o otra otro
para pero poco por porque que quien se ser si sido sin sobre su sus tambien tiene todo todos tras
un una uno unos y ya dijo segun
ao aos as com da das do dos em foi na nas no nos num numa os ou pela pelas pelo pelos sao
uma umas um uns
au aux avec ce ces cette dans des du elle est et il ils leur leurs mais ne nous par pas plus pour
qui sa ses son sont sur une vous
auch auf aus bei bis das dass dem den der des die ein eine einem einen einer eines er es fur
hat im ist mit nach nicht noch nur oder sich sie sind uber um und vom von vor war wie wird zu zum
zur
""".split())
# A few function words per language: enough to tell the languages of news leads apart. Only
# "das" is in two of them (Portuguese and German).
_FUNCTION_WORDS = {
    "en": frozenset("the of and to on for with is was were said has have by from at".split()),
    "es": frozenset("el los las del y por con una al sus tras segun este esta".split()),
    "pt": frozenset("o os da do das dos em um com ao pelo pela nao foi".split()),
    "fr": frozenset("le les du et une dans sur est au aux qui pour avec".split()),
    "de": frozenset("der die das und den von zu mit ist im dem ein eine auf nicht".split()),
}
_LANGUAGES_OF = {word: tuple(lang for lang, found in _FUNCTION_WORDS.items() if word in found)
                 for word in frozenset().union(*_FUNCTION_WORDS.values())}
# Characters that differ between traditional and simplified Chinese, common in news.
_HANT = frozenset("們這國會為說時對來與發經將軍錢遠運機關開門東長當後過還點體實現間從見內區報導際產業")
_HANS = frozenset("们这国会为说时对来与发经将军钱远运机关开门东长当后过还点体实现间从见内区报导际产业")
_KANA = re.compile("[\u3040-\u30ff]")
_UNSPACED_CHARS = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_HANGUL = re.compile("[\uac00-\ud7af]")
_ASCII_LETTER = re.compile("[A-Za-z]")
LANGUAGES = ("", "en", "es", "pt", "fr", "de", "zh-hans", "zh-hant", "zh", "ja", "ko")

_MONTHS = {name: n for n, names in enumerate((
    "january jan enero ene", "february feb febrero", "march mar marzo", "april apr abril abr",
    "may mayo", "june jun junio", "july jul julio", "august aug agosto",
    "september sep sept septiembre setiembre", "october oct octubre",
    "november nov noviembre", "december dec diciembre dic"), 1) for name in names.split()}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_MONTH_DAY = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}})\b")  # Nov 14, November 14
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})\s+(?:de\s+)?({_MONTH})\b")  # 14 nov, 14 de noviembre
_CJK_DATE = re.compile(r"(\d{1,2})月(\d{1,2})日")
_WEEKDAYS = {name: n for n, names in enumerate((
    "monday lunes", "tuesday martes", "wednesday miercoles", "thursday jueves", "friday viernes",
    "saturday sabado", "sunday domingo")) for name in names.split()}
_CJK_WEEKDAY = re.compile(r"(?:星期|周|週)([一二三四五六日天])")


def language(text: str, folded_words: list[str] | None = None) -> str:
    """A best guess from the script and the commonest function words; "" when unsure.
    `folded_words`: the words of the folded text, when the caller has them already."""
    unspaced = 0 if text.isascii() else _UNSPACED_CHARS.subn("", text)[1]  # counted in C
    if unspaced and unspaced * 4 >= _ASCII_LETTER.subn("", text)[1]:
        if _KANA.search(text):
            return "ja"
        if _HANGUL.search(text):
            return "ko"
        traditional = sum(map(_HANT.__contains__, text))
        simplified = sum(map(_HANS.__contains__, text))
        return ("zh-hant" if traditional > simplified else
                "zh-hans" if simplified > traditional else "zh")
    counts = dict.fromkeys(_FUNCTION_WORDS, 0)
    for word in filter(_LANGUAGES_OF.__contains__,
                       words(fold(text)) if folded_words is None else folded_words):
        for lang in _LANGUAGES_OF[word]:
            counts[lang] += 1
    first, second = sorted(counts.values(), reverse=True)[:2]
    if first >= 2 and first >= 2 * second:
        return max(counts, key=counts.__getitem__)
    return ""


def languages_differ(a: str, b: str) -> bool:
    """Known and different; Chinese of undecided script ("zh") differs from neither script."""
    return bool(a and b and a != b and not ("zh" in (a, b) and a[:2] == b[:2] == "zh"))


def figures(text: str) -> set[str]:
    """Numbers as written, with a decimal comma read as a point and `7.0` as `7`."""
    found = set()
    for number in NUMBER.findall(text):
        number = number.replace(",", ".")
        whole, dot, decimals = number.partition(".")
        found.add(whole if dot and decimals.strip("0") == "" and "." not in decimals
                  else number)
    return found


class _Facts:
    """What the vetoes compare, each read from a fingerprint's text when first needed: most
    pairs are told apart (or not) by a few of them."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.title = text.partition("\n")[0]

    @cached_property
    def title_words(self) -> tuple[str, ...]:  # folded, in order
        return tuple(words(fold(self.title)))

    @cached_property
    def title_raw(self) -> tuple[str, ...]:  # as written, to tell names and figures in a slot
        return tuple(re.findall(r"[\w’'-]+", self.title))

    @cached_property
    def prefixes(self) -> frozenset[str]:  # the first six letters of every word of the text
        return frozenset(w[:6] for w in words(fold(self.text)))

    @cached_property
    def title_figures(self) -> frozenset[str]:
        return frozenset(figures(self.title))

    @cached_property
    def figures(self) -> frozenset[str]:
        return frozenset(figures(self.text))

    @cached_property
    def title_values(self) -> tuple[_Figure, ...]:
        return tuple(map(_Figure.of, self.title_figures))

    @cached_property
    def readings(self) -> frozenset[tuple[int, float]]:
        """(decimals, value) of every figure rounded to as many decimals as it has or fewer."""
        return frozenset((places, value) for figure in map(_Figure.of, self.figures)
                         for places, value in enumerate(figure.rounded or ()))

    @cached_property
    def precise(self) -> frozenset[tuple[int, float]]:
        """(decimals, value) of every figure to the decimals it has."""
        return frozenset((len(figure.rounded) - 1, figure.rounded[-1])
                         for figure in map(_Figure.of, self.figures) if figure.rounded)

    @property
    def dates(self) -> frozenset[tuple[int, int]]:  # (month, day)
        return self._days[0]

    @property
    def weekdays(self) -> frozenset[int]:
        return self._days[1]

    @cached_property
    def _days(self) -> tuple[frozenset[tuple[int, int]], frozenset[int]]:
        folded = fold(self.text)
        found = words(folded)
        dates = set()
        if not _MONTHS.keys().isdisjoint(found):  # no month, no match: skip the long patterns
            dates = {(_MONTHS[m], int(d)) for m, d in _MONTH_DAY.findall(folded)}
            dates |= {(_MONTHS[m], int(d)) for d, m in _DAY_MONTH.findall(folded)}
        weekdays = {_WEEKDAYS[w] for w in found if w in _WEEKDAYS}
        if not self.text.isascii():
            dates |= {(int(m), int(d)) for m, d in _CJK_DATE.findall(self.text)}
            weekdays |= {6 if c in "日天" else "一二三四五六".index(c)
                         for c in _CJK_WEEKDAY.findall(self.text)}
        return (frozenset((m, d) for m, d in dates if 1 <= m <= 12 and 1 <= d <= 31),
                frozenset(weekdays))


@lru_cache(maxsize=4096)
def _facts(text: str) -> _Facts:
    """Cached: the same candidates come back for every new item on a busy story."""
    return _Facts(text)


class _Figure(NamedTuple):
    """A figure as written, and its value rounded to each number of decimals it has."""

    text: str
    rounded: tuple[float, ...] | None  # None for one with several dots (1.2.3): compared as is

    @classmethod
    def of(cls, text: str) -> _Figure:
        if text.count(".") > 1:
            return cls(text, None)
        value = float(text)
        return cls(text, tuple(round(value, places)
                               for places in range(len(text.partition(".")[2]) + 1)))


def _stated(figure: _Figure, other: _Facts) -> bool:
    """Whether `other` states a figure that agrees with `figure`, to the precision of the less
    precise of the two: 1.2 and 1 agree, 0.3 and 0.2 do not."""
    if figure.rounded is None:
        return figure.text in other.figures
    places = len(figure.rounded) - 1
    return ((places, figure.rounded[places]) in other.readings  # one at least as precise
            or any((fewer, figure.rounded[fewer]) in other.precise  # or one less precise
                   for fewer in range(places)))


def _figures_disagree(a: _Facts, b: _Facts) -> bool:
    if not a.title_figures or not b.title_figures:
        return False
    return not (any(_stated(figure, b) for figure in a.title_values)
                or any(_stated(figure, a) for figure in b.title_values))


def _other_day(a: _Facts, b: _Facts) -> bool:
    """Reports dated a few days apart, or of different weekdays, are about different days.
    Dates weeks apart say nothing: one of them is about something else (an inauguration
    to come, last year's figure)."""
    gaps = [abs((ma * 31 + da) - (mb * 31 + db)) for ma, da in a.dates for mb, db in b.dates]
    if gaps and min(gaps) > 1 and min(gaps) <= 7:
        return True
    return bool(a.weekdays and b.weekdays and not a.weekdays & b.weekdays)


def _template_slots_differ(a: _Facts, b: _Facts) -> bool:
    """Headlines that share their first (or last) three words and differ in what fills the
    rest, when neither item mentions the other's filling: one template, two events."""
    ta, tb = a.title_words, b.title_words
    if ta[:3] != tb[:3] and ta[-3:] != tb[-3:]:
        return False  # the usual case, told at once
    shortest = min(len(ta), len(tb))
    head = next((i for i in range(shortest) if ta[i] != tb[i]), shortest)
    tail = next((i for i in range(shortest - head) if ta[-1 - i] != tb[-1 - i]), shortest - head)
    if max(head, tail) < 3:
        return False
    slot_a = {w[:6] for w in ta[head:len(ta) - tail] if w not in STOPWORDS and len(w) > 1}
    slot_b = {w[:6] for w in tb[head:len(tb) - tail] if w not in STOPWORDS and len(w) > 1}
    if not slot_a or not slot_b or slot_a & slot_b:
        return False
    return (_is_slot(a, slot_a) and _is_slot(b, slot_b)
            and not slot_a & b.prefixes and not slot_b & a.prefixes)


def _is_slot(facts: _Facts, slot: set[str]) -> bool:
    """A name, a figure or a phrase of two words or more; a single common word that changed is
    more likely an edit of the same headline."""
    return len(slot) >= 2 or any(
        (token[:1].isupper() or token[:1].isdigit())
        and any(w[:6] in slot for w in words(fold(token))) for token in facts.title_raw)


def compatible(a: Fingerprint, b: Fingerprint) -> bool:
    """False when the two items cannot be one story, however similar their words."""
    if languages_differ(a.lang, b.lang):
        return False
    fa, fb = _facts(a.text), _facts(b.text)
    return not (_figures_disagree(fa, fb) or _other_day(fa, fb)
                or _template_slots_differ(fa, fb))
