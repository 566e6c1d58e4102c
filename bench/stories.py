"""How well items are grouped into stories, and what grouping costs per item.

Reads the labelled set (tests/data/stories_cases.yaml: stories, each a list of copies from
different outlets), feeds every item through the real normalisation and the real store (a
temporary SQLite file, one source per outlet, items in publication order with the clock set to
their publication time), then compares the store's grouping with the labels, pair by pair:

    precision = pairs grouped together that the labels group together / pairs grouped together
    recall    = pairs the labels group together that were grouped together / labelled pairs

It prints both for our grouping and for grouping by canonical link alone (what a feed reader
does), the items that were split or merged wrongly, and the cost per item (normalise +
fingerprint + store with story lookup), with the story lookup on its own line, and the pure
part of it on another: `fingerprint` per item, and `best_match` per call with how many
candidates it compared.

Two optional checks go beyond the labelled set:

--background DIR   Real feeds (every *.xml under DIR, e.g. ../shared/corpus) replayed around
                   each labelled day, so that the window also holds unrelated news, as it does in
                   a real newsroom. Those items carry no labels: they do not count in precision
                   or recall; what is printed is how many stories mix labelled and background
                   items (each one a wrong merge: the corpus predates every labelled event).
--window N         Cost at scale: a separate store is filled with N items inside one 72-hour
                   window (text recombined from the labelled set and, with --background, the
                   feeds, so common words are very common), then the labelled items are added
                   on top. Prints the cost per item while filling and on top of the full
                   window, and how many candidates a new item was compared with.

    python bench/stories.py [--cases tests/data/stories_cases.yaml] [--verbose]
                            [--background ../shared/corpus] [--window 50000]
"""

from __future__ import annotations

import argparse
import io
import itertools
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import feedparser
import yaml
from sqlalchemy import select

import monitor.stories
from monitor.normalize import canonical_url, normalize_entry
from monitor.store import Outgoing, Store
from monitor.store.models import Item
from monitor.stories import Fingerprint, fingerprint

HERE = Path(__file__).resolve().parent


def load(path: Path) -> list[dict]:
    stories = yaml.safe_load(path.read_text(encoding="utf-8"))["stories"]
    items = []
    for story in stories:
        for n, item in enumerate(story["items"]):
            published = datetime.fromisoformat(str(item["published"]).replace("Z", "+00:00"))
            items.append({"story": story["id"], "id": f"{story['id']}#{n}",
                          "source": item["source"], "title": item["title"],
                          "summary": item.get("summary", ""), "link": item.get("link"),
                          "published": published})
    return sorted(items, key=lambda i: i["published"])


def background(directory: Path, labelled: list[dict]) -> list[dict]:
    """Every entry of every feed under `directory`, replayed across the 72 hours around each
    day that has labelled items, one source per feed file."""
    entries = []
    for path in sorted(directory.rglob("*.xml")):
        for entry in feedparser.parse(io.BytesIO(path.read_bytes())).entries:
            if entry.get("title"):
                entries.append((path.stem, entry))
    days: list[datetime] = []
    for item in labelled:
        if not days or item["published"] - days[-1] > timedelta(hours=48):
            days.append(item["published"])
    items = []
    for day, start in enumerate(days):
        for n, (feed, entry) in enumerate(entries):
            items.append({"story": None, "id": f"background-{day}-{n}", "source": f"~{feed}",
                          "title": entry.get("title", ""), "summary": entry.get("summary", ""),
                          "link": None,
                          "published": start + timedelta(hours=-36 + 72 * n / len(entries))})
    return items


def pairs(groups: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for members in groups.values()
            for p in itertools.combinations(members, 2)}


def score(predicted: set, truth: set) -> tuple[float, float]:
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth) if truth else 1.0
    return precision, recall


class Meter:
    """Time spent choosing stories, and how many candidates each new item was compared with;
    time spent fingerprinting, and in `best_match` alone (the pure part of choosing)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.lookups = 0
        self.candidates: list[int] = []
        self.fingerprint_seconds = 0.0
        self.fingerprints = 0
        self.match_seconds = 0.0
        self.matched: list[int] = []  # candidates per best_match call

    def fingerprint(self, title: str, lead: str, publisher: str | None) -> Fingerprint | None:
        started = time.perf_counter()
        try:
            return fingerprint(title, lead, publisher)
        finally:
            self.fingerprint_seconds += time.perf_counter() - started
            self.fingerprints += 1

    @contextmanager
    def watching(self, store: Store) -> Iterator[None]:
        story_for, find = store._story_for, getattr(store, "_story_candidates", None)
        best_match = monitor.stories.best_match

        def timed_story_for(*args, **kwargs):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return story_for(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.lookups += 1

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            found = find(*args, **kwargs)
            self.candidates.append(len(found))
            return found

        def timed_best_match(print_, candidates, **options):  # type: ignore[no-untyped-def]
            candidates = list(candidates)
            started = time.perf_counter()
            try:
                return best_match(print_, candidates, **options)
            finally:
                self.match_seconds += time.perf_counter() - started
                self.matched.append(len(candidates))

        store._story_for = timed_story_for  # type: ignore[method-assign]
        if find is not None:
            store._story_candidates = counted  # type: ignore[method-assign]
        monitor.stories.best_match = timed_best_match  # the store calls it through the module
        try:
            yield
        finally:
            del store._story_for
            if find is not None:
                del store._story_candidates
            monitor.stories.best_match = best_match

    def line(self) -> str:
        per_item = self.seconds / max(self.lookups, 1) * 1000
        seen = (f"; candidates per item: mean {sum(self.candidates) / len(self.candidates):.1f},"
                f" max {max(self.candidates)}" if self.candidates else "")
        return f"story lookup: {per_item:.2f} ms per item{seen}"

    def stories_line(self) -> str:
        """The pure part: `fingerprint` and `best_match` per call, in microseconds."""
        per_print = self.fingerprint_seconds / max(self.fingerprints, 1) * 1e6
        per_match = self.match_seconds / max(len(self.matched), 1) * 1e6
        compared = (f" (candidates per call: mean {sum(self.matched) / len(self.matched):.1f},"
                    f" max {max(self.matched)})" if self.matched else "")
        return (f"fingerprint: {per_print:.0f} us per item ({self.fingerprints} items); "
                f"best_match: {per_match:.0f} us per call{compared}")


def open_store(tmp: str, items: list[dict], start: datetime) -> tuple[Store, dict]:
    store = Store.open(f"sqlite:///{tmp}/bench.db")
    outlets = sorted({i["source"] for i in items})
    store.sync_sources([(f"https://{n}.example/feed", outlet, timedelta(minutes=10))
                        for n, outlet in enumerate(outlets)], start)
    return store, {s.name: s for s in store.sources()}


def save(store: Store, source, batch: list[dict], now: datetime,
         meter: Meter) -> dict[str, str]:
    """Store a batch of items from one source; return item identity → bench id."""
    identity, new = {}, []
    for i in batch:
        entry = {"id": i["id"], "title": i["title"], "summary": i["summary"],
                 "link": i["link"], "published_parsed": i["published"].utctimetuple()}
        item = normalize_entry(entry)
        identity[item.identity] = i["id"]
        new.append(Outgoing(item, (), {}, fingerprint=meter.fingerprint(
            item.title, item.summary or item.content, item.publisher)))
    store.save_poll(source, new=new, changed=[], status=200, etag=None, last_modified=None,
                    feed_title=None, now=now, next_poll_at=now)
    return identity


def group(items: list[dict], meter: Meter) -> tuple[dict[str, int], float]:
    """Run the items through normalisation and the store; return item id → story id."""
    with tempfile.TemporaryDirectory() as tmp:
        start = min(i["published"] for i in items) - timedelta(days=1)
        store, by_outlet = open_store(tmp, items, start)
        identity: dict[str, str] = {}
        started = time.perf_counter()
        with meter.watching(store):
            for i in items:
                identity.update(save(store, by_outlet[i["source"]], [i], i["published"], meter))
        elapsed = time.perf_counter() - started
        with store.engine.connect() as conn:
            stories = {identity[row.identity]: row.story_id
                       for row in conn.execute(select(Item.identity, Item.story_id))}
        store.close()
    return stories, elapsed


def at_scale(size: int, labelled: list[dict], extra: list[dict]) -> None:
    """Fill one 72-hour window with `size` items, then add the labelled items on top."""
    rng = random.Random(20241114)
    texts = [(i["title"], i["summary"]) for i in labelled + extra if i["title"]]
    end = datetime.fromisoformat("2030-01-04T00:00:00+00:00")
    start = end - timedelta(hours=71)
    fill = []
    for n in range(size):
        (title, _), (other, lead) = rng.sample(texts, 2)
        words = title.split()
        cut = rng.randrange(1, max(len(words), 2))
        fill.append({"id": f"fill-{n}", "source": f"feed-{n % 1000}", "link": None,
                     "title": f"{' '.join(words[:cut])} {' '.join(other.split()[cut:])} {n}",
                     "summary": lead, "published": start + timedelta(hours=70 * n / size)})
    probe = [dict(i, id=f"probe-{n}", published=end + timedelta(minutes=n))
             for n, i in enumerate(labelled)]
    with tempfile.TemporaryDirectory() as tmp:
        store, by_outlet = open_store(tmp, fill + probe, start)
        filling = Meter()
        started = time.perf_counter()
        with filling.watching(store):
            for n in range(0, size, 100):  # a poll brings about a hundred items
                batch = fill[n:n + 100]
                save(store, by_outlet[batch[0]["source"]], batch, batch[-1]["published"],
                     filling)
        fill_seconds = time.perf_counter() - started
        on_top = Meter()
        started = time.perf_counter()
        with on_top.watching(store):
            for i in probe:
                save(store, by_outlet[i["source"]], [i], i["published"], on_top)
        probe_seconds = time.perf_counter() - started
        store.close()
    print(f"at scale: filling a 72-hour window with {size} items: "
          f"{fill_seconds / size * 1000:.2f} ms per item; {filling.line()}")
    print(f"at scale, filling: {filling.stories_line()}")
    print(f"at scale: {len(probe)} more items on top of the full window: "
          f"{probe_seconds / len(probe) * 1000:.2f} ms per item; {on_top.line()}")
    print(f"at scale, on top: {on_top.stories_line()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=Path,
                        default=HERE.parent / "tests" / "data" / "stories_cases.yaml")
    parser.add_argument("--verbose", action="store_true", help="list every wrong pair")
    parser.add_argument("--background", type=Path, metavar="DIR",
                        help="replay the feeds under DIR as unlabelled traffic")
    parser.add_argument("--window", type=int, metavar="N",
                        help="also measure the cost with N items in the window")
    args = parser.parse_args()
    labelled = load(args.cases)
    extra = background(args.background, labelled) if args.background else []
    items = sorted(labelled + extra, key=lambda i: i["published"])
    truth_groups: dict[str, set[str]] = defaultdict(set)
    for i in labelled:
        truth_groups[i["story"]].add(i["id"])
    truth = pairs(truth_groups)

    meter = Meter()
    stories, elapsed = group(items, meter)
    predicted_groups: dict[str, set[str]] = defaultdict(set)
    for item_id, story_id in stories.items():
        predicted_groups[str(story_id)].add(item_id)
    mixed = sum(1 for members in predicted_groups.values()
                if any(m.startswith("background-") for m in members)
                and not all(m.startswith("background-") for m in members))
    labelled_ids = {i["id"] for i in labelled}
    predicted = pairs({k: v & labelled_ids for k, v in predicted_groups.items()})

    link_groups: dict[str, set[str]] = defaultdict(set)
    for i in labelled:
        link_groups[canonical_url(i["link"]) or i["id"]].add(i["id"])

    precision, recall = score(predicted, truth)
    link_p, link_r = score(pairs(link_groups), truth)
    print(f"labelled set: {len(truth_groups)} stories, {len(labelled)} items, "
          f"{len(truth)} same-story pairs")
    print(f"monitor grouping:        precision {precision:.3f}  recall {recall:.3f}  "
          f"({len({stories[i] for i in labelled_ids})} stories)")
    print(f"canonical link only:     precision {link_p:.3f}  recall {link_r:.3f}  "
          f"({len(link_groups)} stories)")
    print(f"cost: {elapsed / len(items) * 1000:.2f} ms per item "
          f"(normalise, fingerprint, store with story lookup; SQLite)")
    print(meter.line())
    print(meter.stories_line())
    if extra:
        print(f"background: {len(extra)} unlabelled items replayed around the labelled ones; "
              f"stories mixing labelled and background items: {mixed}")
    by_id = {i["id"]: i for i in labelled}
    wrong_merges = predicted - truth
    missed = truth - predicted
    print(f"wrongly merged pairs: {len(wrong_merges)}; missed pairs: {len(missed)}")
    if args.verbose:
        for label, found in (("MERGED", wrong_merges), ("MISSED", missed)):
            for a, b in sorted(found):
                print(f"  {label}: {by_id[a]['title']!r}\n          {by_id[b]['title']!r}")
    if args.window:
        at_scale(args.window, labelled, extra)


if __name__ == "__main__":
    main()
