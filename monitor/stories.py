"""Stories: telling when items from different sources report the same news.

Two items are one story when they share a canonical link (decided in the store), or when their
cleaned titles and leads say the same thing within a time window (`WINDOW`, 72 hours). Wire
copies are near-duplicates, but independent write-ups of one event often share less wording
than two stories about the same people do, so the comparison has three parts:

- Features. Every word of the title and the start of the lead (its dateline, such as
  "LIMA, Nov 14 (Reuters) -" or "新华社利马11月14日电", left out: it names the agency, not the
  event) becomes its character 5-grams, so `inaugurates`/`inauguran` and
  `extorsión`/`extorsiones` meet halfway; figures are kept whole; scripts written without
  spaces (Chinese, Japanese) give character bigrams, so reworded Chinese headlines still share
  钱凯, 神舟, 秘鲁. Title features weigh `TITLE_WEIGHT` times more: the headline names the event,
  the lead also names its setting.
- Rarity, measured where it matters. Candidates are the recent items sharing at least
  `MIN_SHARED_KEYS` words (or bigrams) with the new one, found through an index of those words.
  Weights are inverse document frequencies over that candidate set, not over all news: among
  the week's items about Peru and China, "Peru", "Xi" and "Lima" say little and "protocol" or
  "megaport" say a lot. The score is the weighted cosine: 1 for the same text, about 0.5 and
  up for wire copies, typically 0.09 to 0.4 for independent write-ups of one event; the
  look-alikes that vetoes do not catch reach the same range, which is the limit of comparing
  words.
- Vetoes, because a low threshold needs them. Items in different languages are never one story
  (the language is told from the script and common function words). Nor are items whose
  titles state figures that no figure of the other item agrees with, to the precision of the
  less precise (0.3% and 0.2% disagree; 1.2% and 1% agree, and so do magnitudes 7.0 and 7.2, a
  trailing zero claiming no precision); items dated a few days apart ("LIMA, March 22" and
  "LIMA, March 25"; dates weeks apart are about something else) or on different weekdays ("on
  Friday" and "on Monday"); and template headlines that differ in their filling ("… senior
  leaders in Peru" and "… in Chile", "Perú y China firman <this>" and "… firman <that>") when
  neither item mentions the other's filling at all.

Three rules of thumb about news hold the rest. Independent write-ups of one event appear
within hours of each other, a follow-up days later: beyond `REWORDED_WITHIN`, only
near-duplicates (`NEAR`) join a story. An outlet does not rewrite its own story from scratch:
a second article from the same feed and publisher joins only as a near-duplicate (an update).
And a story grows from confident members: an item that joined on weak evidence (below
`STRONG`) cannot on its own pull a later item in, which keeps one wrong merge from dragging a
second story in with it. Precision comes first: a wrong merge hides an alert, a missed merge
only costs a second one.

Pure: no I/O. The store keeps `Fingerprint.signature` and `Fingerprint.text` with each item,
indexes `Fingerprint.keys`, and calls `best_match` with the candidates it finds. Signatures of
an older format (the MinHash of earlier versions) are ignored and age out of the window.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import numpy as np

from monitor.text import dense, fold, has_unspaced, words

WINDOW = timedelta(hours=72)
REWORDED_WITHIN = timedelta(hours=30)
THRESHOLD = 0.09  # weighted cosine to join a story (the scale: see above)
STRONG = 0.2  # at or above: a confident member, which later items may join through
NEAR = 0.5  # what an item older than REWORDED_WITHIN must reach: a near-duplicate
TITLE_WEIGHT = 3.0
LEAD_WORDS = 60
GRAM = 5
KEYS = 64  # words or bigrams indexed per item, title first
NO_KEY = 0  # a key no word hashes to in practice (one chance in 2**64)
MIN_SHARED_KEYS = 3
POSTINGS_PER_KEY = 50  # the most recent items looked at per word: common words cost no more
CANDIDATES = 50  # compared per new item, those sharing most words first

# "UPDATE 1-", "EXCLUSIVE:", "VIDEO |", "【视频】" … in front of wire headlines.
_PREFIX = re.compile(
    r"^(?:(?:(?:update|updated|exclusive|breaking|video|watch|live|analysis|factbox|explainer|"
    r"urgent|flash|última hora|urgente|en vivo|exclusiva|actualización)\s*\d*\s*[-:|—–]\s*)"
    r"|【[^】]{1,8}】)+",
    re.IGNORECASE)
# " - El Comercio", " | Gestión": an outlet's name after the headline.
_SUFFIX = re.compile(r"\s+[-|—–]\s+([^-|—–]{2,40})$")
# A wire dateline at the start of a lead: "LIMA, Nov 14 (Reuters) - ", "Lima, 14 nov (EFE).- ",
# "BOCA CHICA, Texas (AP) — ", "LIMA, Peru – ", "新华社利马11月14日电 ", "（中央社華盛頓12日綜合外電報導）".
_DATELINE = re.compile(
    r"^\s*(?:"
    r"[^\n()]{0,60}?\([A-Z][\w .&-]{0,24}\)\s*(?:\.-|--|[-—–:])\s*"
    r"|[A-Z][A-Z .'’-]{1,30}[A-Z](?:,\s[^\n()—–-]{1,30}?)?\s(?:--|[-—–])\s"
    r"|[\u4e00-\u9fff]{1,6}社[\u4e00-\u9fff]{0,10}?(?:\d{1,2}月)?\d{1,2}日(?:电|電|讯|訊)\s*"
    r"|[（(][^）)\n]{1,30}(?:电|電|报道|報導|讯|訊)[）)]\s*"
    r")")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_STOPWORDS = frozenset("""
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
# A few function words per language, none shared between two of them: enough to tell the
# languages of news leads apart.
_FUNCTION_WORDS = {
    "en": frozenset("the of and to on for with is was were said has have by from at".split()),
    "es": frozenset("el los las del y por con una al sus tras segun este esta".split()),
    "pt": frozenset("o os da do das dos em um com ao pelo pela nao foi".split()),
    "fr": frozenset("le les du et une dans sur est au aux qui pour avec".split()),
    "de": frozenset("der die das und den von zu mit ist im dem ein eine auf nicht".split()),
}
# Characters that differ between traditional and simplified Chinese, common in news.
_HANT = frozenset("們這國會為說時對來與發經將軍錢遠運機關開門東長當後過還點體實現間從見內區報導際產業")
_HANS = frozenset("们这国会为说时对来与发经将军钱远运机关开门东长当后过还点体实现间从见内区报导际产业")
_KANA = re.compile("[\u3040-\u30ff]")
_UNSPACED_CHARS = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_HANGUL = re.compile("[\uac00-\ud7af]")
_LANGUAGES = ("", "en", "es", "pt", "fr", "de", "zh-hans", "zh-hant", "zh", "ja", "ko")

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


def clean_title(title: str, publisher: str | None = None) -> str:
    title = _PREFIX.sub("", title.strip())
    if publisher and title.endswith(publisher):
        title = title[: -len(publisher)].rstrip(" -|—–")
    suffix = _SUFFIX.search(title)
    if suffix and len(suffix.group(1).split()) <= 4 and not _NUMBER.search(suffix.group(1)):
        title = title[: suffix.start()]
    return title.strip()


def strip_dateline(lead: str) -> str:
    found = _DATELINE.match(lead)
    return lead[found.end():] if found else lead


def _key(word: str) -> int:
    """A word's signed 64-bit key in the store's index."""
    key = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big",
                         signed=True)
    return key if key != NO_KEY else 1


def _hash32(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _content_words(folded: str) -> list[str]:
    return [w for w in words(folded) if w not in _STOPWORDS and len(w) > 1 and not w.isdigit()]


def _stem(word: str) -> str:
    """Plurals off, so that `extorsiones` and `extorsión` index as one word."""
    if len(word) > 4 and word.endswith("es"):
        return word[:-2]
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _figures(text: str) -> set[str]:
    """Numbers as written, with a decimal comma read as a point and `7.0` as `7`."""
    found = set()
    for number in _NUMBER.findall(text):
        number = number.replace(",", ".")
        whole, dot, decimals = number.partition(".")
        found.add(whole if dot and decimals.strip("0") == "" and "." not in decimals
                  else number)
    return found


def _features(text: str) -> set[int]:
    folded = fold(text)
    grams = set()
    for word in _content_words(folded):
        padded = f" {word} "
        if len(padded) <= GRAM:
            grams.add(padded)
        grams.update(padded[i:i + GRAM] for i in range(len(padded) - GRAM + 1))
    grams.update(f"#{n}" for n in _figures(text))
    if has_unspaced(folded):
        chars = dense(folded)
        grams.update(pair for i in range(len(chars) - 1)
                     if has_unspaced(pair := chars[i:i + 2]))
    return {_hash32(g) for g in grams}


def _keys(folded: str) -> list[str]:
    """Words (or bigrams of unspaced scripts) to find candidates by, in order, once each."""
    found = dict.fromkeys(_stem(w) for w in _content_words(folded))
    if has_unspaced(folded):
        chars = dense(folded)
        found.update(dict.fromkeys(pair for i in range(len(chars) - 1)
                                   if has_unspaced(pair := chars[i:i + 2])))
    return list(found)


def language(text: str) -> str:
    """A best guess from the script and the commonest function words; "" when unsure."""
    unspaced = len(_UNSPACED_CHARS.findall(text))
    if unspaced and unspaced * 4 >= sum(c.isascii() and c.isalpha() for c in text):
        if _KANA.search(text):
            return "ja"
        if _HANGUL.search(text):
            return "ko"
        traditional = sum(c in _HANT for c in text)
        simplified = sum(c in _HANS for c in text)
        return ("zh-hant" if traditional > simplified else
                "zh-hans" if simplified > traditional else "zh")
    counts = {lang: 0 for lang in _FUNCTION_WORDS}
    for word in words(fold(text)):
        for lang, function_words in _FUNCTION_WORDS.items():
            counts[lang] += word in function_words
    first, second = sorted(counts.values(), reverse=True)[:2]
    if first >= 2 and first >= 2 * second:
        return max(counts, key=counts.__getitem__)
    return ""


@dataclass(eq=False)
class Fingerprint:
    """What grouping needs of an item, computed once when it arrives.

    `signature` is what the store keeps (the features, the indexed words and the language) and
    `text` the cleaned title and lead that the vetoes read; `keys` are what the store indexes.
    `weak` is set by the store when the item joins a story on weak evidence."""

    text: str  # cleaned title, a line break, the lead (its dateline left out of the features)
    title_features: np.ndarray  # sorted uint32 hashes
    lead_features: np.ndarray  # sorted uint32 hashes of features not in the title
    key_hashes: np.ndarray  # sorted uint32 hashes of the indexed words
    lang: str = ""
    weak: bool = False
    keys: tuple[int, ...] = ()  # signed 64-bit, for the index (not kept in the signature)

    _HEADER = struct.Struct("<BBBHHH")
    _VERSION = 2

    @property
    def title(self) -> str:
        return self.text.partition("\n")[0]

    @property
    def signature(self) -> bytes:
        header = self._HEADER.pack(self._VERSION, _LANGUAGES.index(self.lang), self.weak,
                                   len(self.title_features), len(self.lead_features),
                                   len(self.key_hashes))
        return b"".join((header, self.title_features.astype("<u4").tobytes(),
                         self.lead_features.astype("<u4").tobytes(),
                         self.key_hashes.astype("<u4").tobytes()))

    @classmethod
    def stored(cls, text: str, signature: bytes) -> Fingerprint | None:
        """A fingerprint read back from the store; None for one written by an older version
        (a MinHash signature), which simply ages out of the window."""
        size = cls._HEADER.size
        if len(signature) < size or signature[0] != cls._VERSION:
            return None
        _, lang, weak, n_title, n_lead, n_keys = cls._HEADER.unpack_from(signature)
        if len(signature) != size + 4 * (n_title + n_lead + n_keys):
            return None
        values = np.frombuffer(signature, dtype="<u4", offset=size)
        return cls(text, values[:n_title], values[n_title:n_title + n_lead],
                   values[n_title + n_lead:], _LANGUAGES[lang], bool(weak))

    @property
    def facts(self) -> _Facts:
        return _facts(self.text)


def fingerprint(title: str, lead: str, publisher: str | None = None) -> Fingerprint | None:
    cleaned = clean_title(title, publisher)
    lead = " ".join(lead.split()[:LEAD_WORDS])
    body = strip_dateline(lead)
    text = f"{cleaned}\n{lead}"
    keys = list(dict.fromkeys(_keys(fold(cleaned)) + _keys(fold(body))))
    if len(keys) < MIN_SHARED_KEYS:
        return None  # too little text to compare safely
    title_features = _features(cleaned)
    lead_features = _features(body) - title_features

    def array(values: set[int]) -> np.ndarray:
        return np.array(sorted(values), dtype=np.uint32)

    return Fingerprint(text, array(title_features), array(lead_features),
                       array({_hash32(k) for k in keys}), language(f"{cleaned}\n{body}"),
                       keys=tuple(_key(k) for k in keys[:KEYS]))


# Vetoes ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Facts:
    """What the vetoes compare, read from a fingerprint's text when first needed."""

    title_words: tuple[str, ...]  # folded, in order
    title_raw: tuple[str, ...]  # as written, to tell names and figures in a template's slot
    prefixes: frozenset[str]  # the first six letters of every word of the text
    title_figures: frozenset[str]
    figures: frozenset[str]
    dates: frozenset[tuple[int, int]]  # (month, day)
    weekdays: frozenset[int]

    @classmethod
    def of(cls, text: str) -> _Facts:
        title = text.partition("\n")[0]
        folded = fold(text)
        dates = {(_MONTHS[m], int(d)) for m, d in _MONTH_DAY.findall(folded)}
        dates |= {(_MONTHS[m], int(d)) for d, m in _DAY_MONTH.findall(folded)}
        dates |= {(int(m), int(d)) for m, d in _CJK_DATE.findall(text)}
        weekdays = {_WEEKDAYS[w] for w in words(folded) if w in _WEEKDAYS}
        weekdays |= {6 if c in "日天" else "一二三四五六".index(c)
                     for c in _CJK_WEEKDAY.findall(text)}
        return cls(tuple(words(fold(title))), tuple(re.findall(r"[\w’'-]+", title)),
                   frozenset(w[:6] for w in words(folded)), frozenset(_figures(title)),
                   frozenset(_figures(text)),
                   frozenset((m, d) for m, d in dates if 1 <= m <= 12 and 1 <= d <= 31),
                   frozenset(weekdays))


@lru_cache(maxsize=4096)
def _facts(text: str) -> _Facts:
    """Cached: the same candidates come back for every new item on a busy story."""
    return _Facts.of(text)


def _agree(x: str, y: str) -> bool:
    """Figures agree to the precision of the less precise: 1.2 and 1 do, 0.3 and 0.2 do not."""
    if x.count(".") > 1 or y.count(".") > 1:
        return x == y
    places = min(len(x.partition(".")[2]), len(y.partition(".")[2]))
    return round(float(x), places) == round(float(y), places)


def _figures_disagree(a: _Facts, b: _Facts) -> bool:
    if not a.title_figures or not b.title_figures:
        return False
    return not (any(_agree(x, y) for x in a.title_figures for y in b.figures)
                or any(_agree(x, y) for x in b.title_figures for y in a.figures))


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
    shortest = min(len(ta), len(tb))
    head = next((i for i in range(shortest) if ta[i] != tb[i]), shortest)
    tail = next((i for i in range(shortest - head) if ta[-1 - i] != tb[-1 - i]), shortest - head)
    if max(head, tail) < 3:
        return False
    slot_a = {w[:6] for w in ta[head:len(ta) - tail] if w not in _STOPWORDS and len(w) > 1}
    slot_b = {w[:6] for w in tb[head:len(tb) - tail] if w not in _STOPWORDS and len(w) > 1}
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


def _languages_differ(a: str, b: str) -> bool:
    """Known and different; Chinese of undecided script ("zh") differs from neither script."""
    return bool(a and b and a != b and not ("zh" in (a, b) and a[:2] == b[:2] == "zh"))


def compatible(a: Fingerprint, b: Fingerprint) -> bool:
    """False when the two items cannot be one story, however similar their words."""
    if _languages_differ(a.lang, b.lang):
        return False
    fa, fb = a.facts, b.facts
    return not (_figures_disagree(fa, fb) or _other_day(fa, fb)
                or _template_slots_differ(fa, fb))


# Similarity --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    story_id: int
    fingerprint: Fingerprint
    age: timedelta = timedelta(0)  # how long before the new item it arrived
    same_outlet: bool = False  # from the same feed and publisher as the new item


@dataclass(frozen=True)
class Match:
    story_id: int
    score: float
    weak: bool  # joined below STRONG: not a member others may join through on their own


def similarities(print_: Fingerprint, others: Sequence[Fingerprint]) -> np.ndarray:
    """Weighted cosine of `print_` with each of `others`: a feature weighs its inverse
    document frequency among them all, times `TITLE_WEIGHT` where it is in a title."""
    if not others or not (len(print_.title_features) or len(print_.lead_features)):
        return np.zeros(len(others))
    items = [print_, *others]
    parts = [part for p in items for part in (p.title_features, p.lead_features)]
    sizes = np.array([len(part) for part in parts])
    feature = np.concatenate(parts)
    owner = np.repeat(np.arange(len(parts)) // 2, sizes)
    in_title = np.repeat(np.arange(len(parts)) % 2 == 0, sizes)
    _, inverse, counts = np.unique(feature, return_inverse=True, return_counts=True)
    weight = np.log1p(len(items) / counts)[inverse] * np.where(in_title, TITLE_WEIGHT, 1.0)
    norms = np.sqrt(np.bincount(owner, weights=weight ** 2, minlength=len(items)))
    mine = int(sizes[0] + sizes[1])  # print_'s own features come first
    order = np.argsort(feature[:mine])
    own_features, own_weights = feature[:mine][order], weight[:mine][order]
    at = np.minimum(np.searchsorted(own_features, feature[mine:]), len(own_features) - 1)
    shared = own_features[at] == feature[mine:]
    dots = np.bincount(owner[mine:][shared],
                       weights=weight[mine:][shared] * own_weights[at[shared]],
                       minlength=len(items))
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = dots[1:] / (norms[0] * norms[1:])
    return np.nan_to_num(scores)


def similarity(a: Fingerprint, b: Fingerprint) -> float:
    return float(similarities(a, [b])[0])


def _shared_keys(print_: Fingerprint, others: Sequence[Fingerprint]) -> np.ndarray:
    """How many words (or bigrams) each of `others` shares with `print_`."""
    if not others:
        return np.zeros(0, dtype=int)
    keys = [o.key_hashes for o in others]
    owner = np.repeat(np.arange(len(keys)), [len(k) for k in keys])
    shared = np.isin(np.concatenate(keys), print_.key_hashes)
    return np.bincount(owner[shared], minlength=len(keys))


def best_match(print_: Fingerprint, candidates: Iterable[Candidate]) -> Match | None:
    """The story the item belongs to among the candidates' stories, if any."""
    pool = [c for c in candidates if not _languages_differ(print_.lang, c.fingerprint.lang)]
    pool = [c for c, shared in zip(pool, _shared_keys(print_, [c.fingerprint for c in pool]))
            if shared >= MIN_SHARED_KEYS]
    scores = similarities(print_, [c.fingerprint for c in pool])
    best: dict[int, float] = {}
    confident: set[int] = set()  # stories the item resembles through a confident member
    for score, candidate in sorted(zip(scores.tolist(), pool), key=lambda p: -p[0]):
        need = NEAR if candidate.same_outlet or candidate.age > REWORDED_WITHIN else THRESHOLD
        if score < need or not compatible(print_, candidate.fingerprint):
            continue
        best.setdefault(candidate.story_id, score)
        if not candidate.fingerprint.weak:
            confident.add(candidate.story_id)
    eligible = {s: v for s, v in best.items() if s in confident or v >= STRONG}
    if not eligible:
        return None
    story_id = max(eligible, key=lambda s: (eligible[s], -s))
    return Match(story_id, eligible[story_id], eligible[story_id] < STRONG)

