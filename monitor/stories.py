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
finds candidates by the words of `Fingerprint.key_hashes`, and calls `best_match` with them.
Signatures of an older format (the MinHash of earlier versions) are ignored and age out of the
window. The vetoes, and the language they and the candidate pool go by, live in
`monitor.vetoes`.

Cost, since a poll may bring tens of thousands of items: what a fingerprint takes from a word
alone is computed once per process (`_word`: the news repeats its words), and `best_match`
scores all its candidates in one numpy pass over their features (`_cosines`), adding the same
numbers in the same order as a loop over the items would, so the scores are the same to the
last bit.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from itertools import chain
from operator import attrgetter, itemgetter
from typing import NamedTuple

import numpy as np

from monitor.text import dense, fold, has_unspaced, words
from monitor.vetoes import (LANGUAGES, NUMBER, STOPWORDS, compatible, figures, language,
                            languages_differ)

WINDOW = timedelta(hours=72)
REWORDED_WITHIN = timedelta(hours=30)
THRESHOLD = 0.09  # weighted cosine to join a story (the scale: see above)
STRONG = 0.2  # at or above: a confident member, which later items may join through
NEAR = 0.5  # what an item older than REWORDED_WITHIN must reach: a near-duplicate
TITLE_WEIGHT = 3.0
LEAD_WORDS = 60
GRAM = 5
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


def clean_title(title: str, publisher: str | None = None) -> str:
    title = _PREFIX.sub("", title.strip())
    if publisher and title.endswith(publisher):
        title = title[: -len(publisher)].rstrip(" -|—–")
    suffix = _SUFFIX.search(title)
    if suffix and len(suffix.group(1).split()) <= 4 and not NUMBER.search(suffix.group(1)):
        title = title[: suffix.start()]
    return title.strip()


def strip_dateline(lead: str) -> str:
    found = _DATELINE.match(lead)
    return lead[found.end():] if found else lead


def _hash32(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


class _Word(NamedTuple):
    key: str  # the word's stem, which candidates are found by
    hash: int  # of the key (`Fingerprint.key_hashes`)
    features: tuple[int, ...]


# The news repeats its words item after item, so what a fingerprint takes from a word alone is
# cached (some 10 MB when full): hashing grams one by one was most of the cost of a fingerprint.
@lru_cache(maxsize=1 << 14)
def _word(word: str) -> _Word | None:
    """A folded word's key and features (its character 5-grams with a space at each end,
    hashed); None for a word that says nothing: a stop word, a single letter, a number."""
    if word in STOPWORDS or len(word) <= 1 or word.isdigit():
        return None
    padded = f" {word} "
    grams = ({padded} if len(padded) <= GRAM else
             {padded[i:i + GRAM] for i in range(len(padded) - GRAM + 1)})
    key = _stem(word)
    return _Word(key, _key_hash(key), tuple(map(_hash32, grams)))


def _stem(word: str) -> str:
    """Plurals off, so that `extorsiones` and `extorsión` index as one word."""
    if len(word) > 4 and word.endswith("es"):
        return word[:-2]
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


@lru_cache(maxsize=1 << 13)  # for the stems of new words, and bigrams
def _key_hash(key: str) -> int:
    return _hash32(key)


@lru_cache(maxsize=1 << 14)
def _unspaced(char: str) -> bool:
    return has_unspaced(char)


@dataclass
class _Part:
    """The title, or the lead without its dateline, as features and keys see it."""

    text: str
    words: list[str]  # of the folded text
    content: list[_Word]  # the words that say something, in order
    bigrams: list[tuple[str, int]]  # of unspaced scripts' characters, with their hashes

    @classmethod
    def of(cls, text: str) -> _Part:
        folded = fold(text)
        found = words(folded)
        bigrams = []
        if not folded.isascii() and has_unspaced(folded):
            chars = dense(folded)
            unspaced = list(map(_unspaced, chars))
            pairs = [a + b for a, b, in_a, in_b in zip(chars, chars[1:], unspaced, unspaced[1:])
                     if in_a or in_b]
            bigrams = list(zip(pairs, map(_key_hash, pairs)))
        return cls(text, found, list(filter(None, map(_word, found))), bigrams)

    def keys(self) -> Iterator[tuple[str, int]]:
        """Each key (stem or bigram) with its hash, in order."""
        return chain(map(_KEY_AND_HASH, self.content), self.bigrams)

    def features(self) -> set[int]:
        found = set(chain.from_iterable(map(attrgetter("features"), self.content)))
        found.update(_hash32(f"#{n}") for n in figures(self.text))
        found.update(hash_ for _, hash_ in self.bigrams)
        return found


_KEY_AND_HASH = itemgetter(0, 1)  # of a _Word


def _sorted_array(values: set[int]) -> np.ndarray:
    found = np.fromiter(values, dtype="<u4", count=len(values))
    found.sort()
    return found


@dataclass(eq=False)
class Fingerprint:
    """What grouping needs of an item, computed once when it arrives.

    `signature` is what the store keeps (the features, the indexed words and the language) and
    `text` the cleaned title and lead that the vetoes read; `key_hashes` are the words the
    store finds candidates by. `weak` is set by the store when the item joins a story on weak
    evidence."""

    text: str  # cleaned title, a line break, the lead (its dateline left out of the features)
    title_features: np.ndarray  # sorted uint32 hashes
    lead_features: np.ndarray  # sorted uint32 hashes of features not in the title
    key_hashes: np.ndarray  # sorted uint32 hashes of the indexed words
    lang: str = ""
    weak: bool = False
    _blocks: _Blocks | None = field(default=None, init=False, repr=False)

    _HEADER = struct.Struct("<BBBHHH")
    _VERSION = 2

    @property
    def title(self) -> str:
        return self.text.partition("\n")[0]

    @property
    def signature(self) -> bytes:
        header = self._HEADER.pack(self._VERSION, LANGUAGES.index(self.lang), self.weak,
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
        found = cls(text, values[:n_title], values[n_title:n_title + n_lead],
                    values[n_title + n_lead:], LANGUAGES[lang], bool(weak))
        view, lead, keys = memoryview(signature), size + 4 * n_title, size + 4 * (n_title + n_lead)
        found._blocks = _Blocks(view[size:lead].cast("I"), view[lead:keys].cast("I"),
                                view[keys:].cast("I"))
        return found

    def blocks(self) -> _Blocks:
        """The arrays as buffers (views, not copies): joining buffers puts a pool of
        candidates together far faster than joining arrays. Cut from the signature when read
        back from the store, made when first needed otherwise."""
        if self._blocks is None:
            self._blocks = _Blocks(*(memoryview(np.ascontiguousarray(part, dtype="<u4"))
                                     for part in (self.title_features, self.lead_features,
                                                  self.key_hashes)))
        return self._blocks


class _Blocks(NamedTuple):
    """A fingerprint's arrays as buffers of little-endian uint32 (their lengths count those)."""

    title: memoryview
    lead: memoryview
    key_hashes: memoryview


def fingerprint(title: str, lead: str, publisher: str | None = None) -> Fingerprint | None:
    cleaned = clean_title(title, publisher)
    lead = " ".join(lead.split(maxsplit=LEAD_WORDS)[:LEAD_WORDS])
    body = strip_dateline(lead)
    head, rest = _Part.of(cleaned), _Part.of(body)
    keys = dict(chain(head.keys(), rest.keys()))  # key -> hash, in order of first use
    if len(keys) < MIN_SHARED_KEYS:
        return None  # too little text to compare safely
    title_features = head.features()
    return Fingerprint(f"{cleaned}\n{lead}", _sorted_array(title_features),
                       _sorted_array(rest.features() - title_features),
                       _sorted_array(set(keys.values())),
                       # Folding and splitting go character by character: the words of the
                       # two parts are those of the whole.
                       language(f"{cleaned}\n{body}", head.words + rest.words))


# Similarity --------------------------------------------------------------------------------

class Candidate(NamedTuple):  # a tuple: the store makes some fifty for each new item
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
    return _cosines(print_.blocks(), [o.blocks() for o in others])


def similarity(a: Fingerprint, b: Fingerprint) -> float:
    return float(similarities(a, [b])[0])


def _cosines(mine: _Blocks, theirs: list[_Blocks]) -> np.ndarray:
    if not theirs or not (len(mine.title) or len(mine.lead)):
        return np.zeros(len(theirs))
    titles, leads, _ = zip(mine, *theirs)
    n = len(titles)
    # Every title's features, then every lead's: each item's features still come title first,
    # in order, as every sum below adds them, so that the scores are the same to the last bit
    # as a loop over the items would give.
    parts = titles + leads
    sizes = list(map(len, parts))
    in_titles, total = sum(sizes[:n]), sum(sizes)
    # (place, feature) pairs, read as little-endian 64-bit numbers, sort by feature then place:
    # one sort groups the holders of each distinct feature. No two are equal, so any sort
    # gives the same order; numpy's default is the fastest (with AVX2 or AVX-512, a vectorised
    # quicksort: some five times a merging sort's speed, although the parts come in runs).
    pairs = np.empty((total, 2), dtype="<u4")
    pairs[:, 0] = np.arange(total, dtype="<u4")
    pairs[:, 1] = np.frombuffer(b"".join(parts), dtype="<u4")
    keys = pairs.view("<u8").reshape(-1)
    keys.sort()
    place = pairs[:, 0].astype(np.intp)
    keys >>= 32  # the features alone, in order
    new = np.empty(total, dtype=bool)  # where a distinct feature starts
    new[0] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    distinct = np.cumsum(new) - 1  # numbered in sorted order
    feature = np.empty(total, dtype=np.intp)  # the distinct feature at each place
    feature[place] = distinct
    weight = np.log1p(n / np.bincount(distinct))[feature]
    weight[:in_titles] *= TITLE_WEIGHT
    owner = _owners(n).repeat(sizes)
    norms = np.sqrt(np.bincount(owner, weights=weight ** 2, minlength=n))
    own = np.zeros(distinct[-1] + 1)  # the weight of each distinct feature in print_, or 0
    own[feature[:sizes[0]]] = weight[:sizes[0]]
    own[feature[in_titles:in_titles + sizes[n]]] = weight[in_titles:in_titles + sizes[n]]
    # Adding the zeros of the features print_ lacks changes no bit of the dot products.
    dots = np.bincount(owner, weights=weight * own[feature], minlength=n)
    return dots[1:] / (norms[0] * np.where(norms[1:] > 0, norms[1:], np.inf))


@lru_cache(maxsize=256)
def _owners(n: int) -> np.ndarray:
    """Whose features each part is, for `n` items' titles, then their leads."""
    return np.arange(2 * n) % n


def _shared_keys(mine: _Blocks, theirs: list[_Blocks]) -> np.ndarray:
    """How many words (or bigrams) each of `theirs` shares with `mine`."""
    own = np.frombuffer(mine.key_hashes, dtype="<u4")
    if not theirs or not len(own):
        return np.zeros(len(theirs), dtype=int)
    keys = [b.key_hashes for b in theirs]
    hashes = np.frombuffer(b"".join(keys), dtype="<u4")
    shared = own.take(np.searchsorted(own, hashes), mode="clip") == hashes
    owner = np.arange(len(keys)).repeat(list(map(len, keys)))
    return np.bincount(owner[shared], minlength=len(keys))


def best_match(print_: Fingerprint, candidates: Iterable[Candidate], *,
               sharing_checked: bool = False) -> Match | None:
    """The story the item belongs to among the candidates' stories, if any.
    `sharing_checked`: every candidate is known to share at least `MIN_SHARED_KEYS` words
    with the item (as the store's index finds them), so that is not counted again."""
    lang = print_.lang
    pool = [c for c in candidates
            if c.fingerprint.lang == lang or not languages_differ(lang, c.fingerprint.lang)]
    mine, theirs = print_.blocks(), [c.fingerprint.blocks() for c in pool]
    if not sharing_checked:
        enough = _shared_keys(mine, theirs) >= MIN_SHARED_KEYS
        if not enough.all():
            pool = [c for c, keep in zip(pool, enough.tolist()) if keep]
            theirs = [b for b, keep in zip(theirs, enough.tolist()) if keep]
    scores = _cosines(mine, theirs).tolist()
    best: dict[int, float] = {}
    confident: set[int] = set()  # stories the item resembles through a confident member
    leader = (0.0, 0)  # (score, -story) of the story of the highest score so far
    # Best first; below THRESHOLD no candidate counts.
    for n in sorted((n for n, score in enumerate(scores) if score >= THRESHOLD),
                    key=scores.__getitem__, reverse=True):
        score, candidate = scores[n], pool[n]
        if score < leader[0] and (-leader[1] in confident or leader[0] >= STRONG):
            break  # that story is eligible, and no later candidate can overtake it
        need = NEAR if candidate.same_outlet or candidate.age > REWORDED_WITHIN else THRESHOLD
        if score < need or not compatible(print_, candidate.fingerprint):
            continue
        if candidate.story_id not in best:
            best[candidate.story_id] = score
            leader = max(leader, (score, -candidate.story_id))
        if not candidate.fingerprint.weak:
            confident.add(candidate.story_id)
    eligible = {s: v for s, v in best.items() if s in confident or v >= STRONG}
    if not eligible:
        return None
    story_id = max(eligible, key=lambda s: (eligible[s], -s))
    return Match(story_id, eligible[story_id], eligible[story_id] < STRONG)
