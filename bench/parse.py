"""How long parsing and normalising one feed takes: feedparser's path against the fast path.

Generates N news feeds the way bench/poll.py serves them (RSS 2.0, M items each, ~80 KB at 50
items, some with content:encoded, some Chinese) and times `monitor.parse.read_feed` on each,
through feedparser (`fast=False`) and through `monitor.fastfeed`, in alternating rounds in one
process so both see the same (noisy, shared) machine. Prints the best round's milliseconds per
feed for each path, the fast path split into parsing and normalising, the ratio, and how many
feeds the fast path took (a feed it refuses goes through feedparser, so unless it takes them
all the figures mean little). The canonical-URL cache is emptied before every pass, so each
pass sees every URL for the first time, as a first poll does.

    python bench/parse.py [--feeds 40] [--items 50] [--rounds 5] [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from poll import Corpus, vocabulary

from monitor import fastfeed, normalize
from monitor.parse import read_feed

CONTENT_TYPE = "application/rss+xml; charset=utf-8"


def url(feed: int) -> str:
    return f"https://news{feed}.example/rss.xml"


def per_feed_ms(bodies: list[bytes], run: Callable[[int, bytes], object]) -> float:
    normalize._canonical_url.cache_clear()
    gc.collect()
    start = time.perf_counter()
    for feed, body in enumerate(bodies):
        run(feed, body)
    return (time.perf_counter() - start) / len(bodies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=40)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=HERE.parent.parent / "shared" / "corpus",
                        help="the test corpus, whose publisher feeds give the vocabulary")
    args = parser.parse_args()

    corpus = Corpus(args.items, 3, datetime.now(UTC), vocabulary(args.corpus))
    bodies = [corpus.feed(feed, 0) for feed in range(args.feeds)]
    parsed = [fastfeed.read(body, url=url(feed), content_type=CONTENT_TYPE)
              for feed, body in enumerate(bodies)]
    size = sum(map(len, bodies)) / len(bodies) / 1024
    print(f"{args.feeds} feeds of {args.items} items, {size:.0f} KB on average; the fast path "
          f"takes {sum(p is not None for p in parsed)} of them")

    def normalise(feed: int, _body: bytes) -> None:
        fields, entries, _ = parsed[feed]  # type: ignore[misc]
        for entry in entries:
            normalize.normalize_entry(entry, feed_language=fields.get("language"))

    paths: dict[str, Callable[[int, bytes], object]] = {
        "feedparser": lambda f, b: read_feed(b, url=url(f), content_type=CONTENT_TYPE,
                                             fast=False),
        "fast path": lambda f, b: read_feed(b, url=url(f), content_type=CONTENT_TYPE),
        "  of which parsing": lambda f, b: fastfeed.read(b, url=url(f),
                                                         content_type=CONTENT_TYPE),
        "  of which normalising": normalise,
    }
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(args.rounds):
        for name, run in paths.items():
            best[name] = min(best[name], per_feed_ms(bodies, run))
    print("ms per feed (parse + normalise), best of", args.rounds, "rounds:")
    for name, ms in best.items():
        print(f"  {name:<24} {ms:7.2f}")
    print(f"  {'speed-up':<24} {best['feedparser'] / best['fast path']:7.1f}x")


if __name__ == "__main__":
    main()
