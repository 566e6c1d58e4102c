"""Stories: telling when items from different sources report the same news.

Two items are one story when they share a canonical link (decided in the store), or when their
titles and leads are near-duplicates within a time window. Near-duplicates are found with
MinHash (datasketch) over the words of the cleaned title and the lead, and candidates are
looked up by locality-sensitive hashing: the signature is cut into bands, and items sharing any
band are compared. The bands live in the database, so grouping works across restarts and
instances, not only within one process.

A candidate is accepted only if its estimated similarity clears `THRESHOLD` and the two titles
do not disagree: on figures ("rise 12% in March" and "rise 8% in April" are different news with
the same template), or on names — when each title names something (a capitalised word: a
country, a person, an organisation) that the other item does not mention at all ("commander
meets leaders in Peru" and "… in Chile"). Precision comes first: wrongly merged stories hide an
alert, while a missed merge only costs a second one.

Pure: no I/O. The store calls `fingerprint`, `bands` and `best_match`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from datasketch import MinHash

from monitor.text import dense, fold, has_unspaced, words

WINDOW = timedelta(hours=72)
NUM_PERM = 128
BANDS, ROWS = 64, 2  # a pair at 0.3 estimated Jaccard shares a band with 99.8% probability
THRESHOLD = 0.3
# With little text a few shared words are already a large share: ask for more.
SHORT, SHORT_THRESHOLD = 12, 0.6
LEAD_WORDS = 60
_SEED = 20241114
_SCHEME = "affine32"  # datasketch 2's default, named so stored signatures stay comparable
_PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=_SEED, scheme=_SCHEME).permutations

# "UPDATE 1-", "EXCLUSIVE:", "VIDEO |" … in front of wire headlines.
_PREFIX = re.compile(
    r"^(?:(?:update|updated|exclusive|breaking|video|watch|live|analysis|factbox|explainer|"
    r"urgent|flash|última hora|urgente|en vivo|exclusiva|actualización)\s*\d*\s*[-:|—–]\s*)+",
    re.IGNORECASE)
# " - El Comercio", " | Gestión": an outlet's name after the headline.
_SUFFIX = re.compile(r"\s+[-|—–]\s+([^-|—–]{2,40})$")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NAME = re.compile(r"(?<![\w’'])([A-ZÁÉÍÓÚÑÜ][\w’'-]*\w|[A-Z]{2,})")
_STOPWORDS = frozenset("""
a an and are as at be by de del el en for from has in is it la las los of on or para por que
se su the to un una with y al con lo le les des du et à o e
""".split())


def clean_title(title: str, publisher: str | None = None) -> str:
    title = _PREFIX.sub("", title.strip())
    if publisher and title.endswith(publisher):
        title = title[: -len(publisher)].rstrip(" -|—–")
    suffix = _SUFFIX.search(title)
    if suffix and len(suffix.group(1).split()) <= 4 and not _NUMBER.search(suffix.group(1)):
        title = title[: suffix.start()]
    return title.strip()


def features(title: str, lead: str) -> set[str]:
    """Words of the title and the start of the lead, folded, without the commonest function
    words; two-character shingles for unspaced scripts."""
    text = fold(f"{title}\n{' '.join(lead.split()[:LEAD_WORDS])}")
    found = {w for w in words(text) if w not in _STOPWORDS}
    if has_unspaced(text):
        chars = dense(text)
        found.update(chars[i:i + 2] for i in range(len(chars) - 1))
    return found


@dataclass(frozen=True)
class Fingerprint:
    text: str  # cleaned title, a line break, the lead: for the figures and names checks
    signature: bytes  # NUM_PERM uint32 values
    size: int = SHORT  # how many distinct words and shingles the signature summarises

    @property
    def array(self) -> np.ndarray:
        return np.frombuffer(self.signature, dtype=np.uint32)

    @property
    def title(self) -> str:
        return self.text.partition("\n")[0]

    @classmethod
    def stored(cls, text: str, signature: bytes) -> Fingerprint:
        """A fingerprint read back from the store."""
        title, _, lead = text.partition("\n")
        return cls(text, signature, len(features(title, lead)))


def fingerprint(title: str, lead: str, publisher: str | None = None) -> Fingerprint | None:
    cleaned = clean_title(title, publisher)
    lead = " ".join(lead.split()[:LEAD_WORDS])
    shingles = features(cleaned, lead)
    if len(shingles) < 3:
        return None  # too little text to compare safely
    minhash = MinHash(num_perm=NUM_PERM, seed=_SEED, permutations=_PERMUTATIONS,
                      scheme=_SCHEME)
    minhash.update_batch([s.encode("utf-8") for s in shingles])
    return Fingerprint(f"{cleaned}\n{lead}", minhash.hashvalues.astype(np.uint32).tobytes(),
                       len(shingles))


def bands(print_: Fingerprint) -> list[int]:
    """One signed 64-bit key per band (the band's index is part of the key)."""
    values = print_.array
    keys = []
    for band in range(BANDS):
        chunk = values[band * ROWS:(band + 1) * ROWS].tobytes()
        digest = hashlib.blake2b(bytes([band]) + chunk, digest_size=8).digest()
        keys.append(int.from_bytes(digest, "big", signed=True))
    return keys


def similarity(a: Fingerprint, b: Fingerprint) -> float:
    return float(np.mean(a.array == b.array))


def _figures(title: str) -> set[str]:
    return {n.replace(",", ".") for n in _NUMBER.findall(title)}


def _names_missing_from(title: str, text: str) -> set[str]:
    """Names in `title` that `text` never mentions."""
    present = set(words(fold(text)))
    return {name for name in _NAME.findall(title)
            if (found := words(fold(name))) and not set(found) <= present
            and fold(name) not in _STOPWORDS}


def compatible(a: Fingerprint, b: Fingerprint) -> bool:
    """Titles that both state figures must share one (same template, other numbers: other
    news), and each title may not name something the other item never mentions."""
    fa, fb = _figures(a.title), _figures(b.title)
    if fa and fb and not fa & fb:
        return False
    return not (_names_missing_from(a.title, b.text) and _names_missing_from(b.title, a.text))


@dataclass(frozen=True)
class Candidate:
    story_id: int
    fingerprint: Fingerprint


def best_match(print_: Fingerprint, candidates: Iterable[Candidate]) -> int | None:
    """The story of the most similar acceptable candidate, if any."""
    best: tuple[float, int] | None = None
    for candidate in candidates:
        score = similarity(print_, candidate.fingerprint)
        short = min(print_.size, candidate.fingerprint.size) < SHORT
        if score >= (SHORT_THRESHOLD if short else THRESHOLD) and \
                compatible(print_, candidate.fingerprint) and (best is None or score > best[0]):
            best = (score, candidate.story_id)
    return best[1] if best else None
