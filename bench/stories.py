"""How well items are grouped into stories, and what grouping costs per item.

Reads the labelled set (tests/data/stories_cases.yaml: stories, each a list of copies from
different outlets), feeds every item through the real normalisation and the real store (a
temporary SQLite file, one source per outlet, items in publication order with the clock set to
their publication time), then compares the store's grouping with the labels, pair by pair:

    precision = pairs grouped together that the labels group together / pairs grouped together
    recall    = pairs the labels group together that were grouped together / labelled pairs

It prints both for our grouping and for grouping by canonical link alone (what a feed reader
does), the items that were split or merged wrongly, and the cost per item (normalise +
fingerprint + store with story lookup).

    python bench/stories.py [--cases tests/data/stories_cases.yaml] [--verbose]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy import select

from monitor.normalize import canonical_url, normalize_entry
from monitor.store import Outgoing, Store
from monitor.store.models import Item
from monitor.stories import fingerprint

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


def pairs(groups: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for members in groups.values()
            for p in itertools.combinations(members, 2)}


def score(predicted: set, truth: set) -> tuple[float, float]:
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth) if truth else 1.0
    return precision, recall


def group(items: list[dict]) -> tuple[dict[str, int], float]:
    """Run the items through normalisation and the store; return item id → story id."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{tmp}/bench.db")
        outlets = sorted({i["source"] for i in items})
        start = min(i["published"] for i in items) - timedelta(days=1)
        store.sync_sources([(f"https://{n}.example/feed", outlet, timedelta(minutes=10))
                            for n, outlet in enumerate(outlets)], start)
        by_outlet = {s.name: s for s in store.sources()}
        identity: dict[str, str] = {}
        started = time.perf_counter()
        for i in items:
            entry = {"id": i["id"], "title": i["title"], "summary": i["summary"],
                     "link": i["link"], "published_parsed": i["published"].utctimetuple()}
            item = normalize_entry(entry)
            identity[item.identity] = i["id"]
            out = Outgoing(item, (), {}, fingerprint=fingerprint(
                item.title, item.summary or item.content, item.publisher))
            store.save_poll(by_outlet[i["source"]], new=[out], changed=[], status=200,
                            etag=None, last_modified=None, feed_title=None,
                            now=i["published"], next_poll_at=i["published"])
        elapsed = time.perf_counter() - started
        with store.engine.connect() as conn:
            stories = {identity[row.identity]: row.story_id
                       for row in conn.execute(select(Item.identity, Item.story_id))}
        store.close()
    return stories, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=Path,
                        default=HERE.parent / "tests" / "data" / "stories_cases.yaml")
    parser.add_argument("--verbose", action="store_true", help="list every wrong pair")
    args = parser.parse_args()
    items = load(args.cases)
    truth_groups: dict[str, set[str]] = defaultdict(set)
    for i in items:
        truth_groups[i["story"]].add(i["id"])
    truth = pairs(truth_groups)

    stories, elapsed = group(items)
    predicted_groups: dict[str, set[str]] = defaultdict(set)
    for item_id, story_id in stories.items():
        predicted_groups[str(story_id)].add(item_id)
    predicted = pairs(predicted_groups)

    link_groups: dict[str, set[str]] = defaultdict(set)
    for i in items:
        link_groups[canonical_url(i["link"]) or i["id"]].add(i["id"])

    precision, recall = score(predicted, truth)
    link_p, link_r = score(pairs(link_groups), truth)
    print(f"labelled set: {len(truth_groups)} stories, {len(items)} items, "
          f"{len(truth)} same-story pairs")
    print(f"monitor grouping:        precision {precision:.3f}  recall {recall:.3f}  "
          f"({len(predicted_groups)} stories)")
    print(f"canonical link only:     precision {link_p:.3f}  recall {link_r:.3f}  "
          f"({len(link_groups)} stories)")
    print(f"cost: {elapsed / len(items) * 1000:.2f} ms per item "
          f"(normalise, fingerprint, store with story lookup; SQLite)")
    by_id = {i["id"]: i for i in items}
    wrong_merges = predicted - truth
    missed = truth - predicted
    print(f"wrongly merged pairs: {len(wrong_merges)}; missed pairs: {len(missed)}")
    if args.verbose:
        for label, found in (("MERGED", wrong_merges), ("MISSED", missed)):
            for a, b in sorted(found):
                print(f"  {label}: {by_id[a]['title']!r}\n          {by_id[b]['title']!r}")


if __name__ == "__main__":
    main()
