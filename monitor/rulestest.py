"""`monitor rules test`: what would match, and why — without sending anything.

Items come as JSON Lines (`{"id", "title", "summary", "content", "source", "url", "lang",
"tags"}`; `id` and one text field are required), from a live feed fetched now, or from the
store (a backtest over what was seen in a past window). Each item gives one JSON line:
`{"id": …, "rules": [ids], "terms": {rule id: [terms]}, "where": {rule id: [[term, field]]}}`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from monitor.engine import Engine
from monitor.match import Document
from monitor.query import TEXT_FIELDS

FIELDS = ("id", "title", "summary", "content", "source", "url", "lang", "tags")


class BadLine(ValueError):
    def __init__(self, line: int, reason: str):
        self.line = line
        self.reason = reason
        super().__init__(f"{line}: {reason}")


def read_jsonl(stream: TextIO) -> Iterator[tuple[str, Document] | BadLine]:
    """Items from JSON Lines; a bad line is yielded as a BadLine and reading goes on."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            yield BadLine(number, f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(data, dict):
            yield BadLine(number, "expected a JSON object")
            continue
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            yield BadLine(number, f"unknown field(s) {', '.join(unknown)} (known: "
                                  f"{', '.join(FIELDS)})")
            continue
        if "id" not in data or not any(data.get(f) for f in TEXT_FIELDS):
            yield BadLine(number, "an item needs an `id` and at least one of title, summary, "
                                  "content")
            continue
        tags = data.get("tags") or ()
        if isinstance(tags, str):
            tags = (tags,)
        if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
            yield BadLine(number, "tags must be a string or a list of strings")
            continue
        texts = {k: data.get(k) or "" for k in ("title", "summary", "content", "source", "url",
                                               "lang")}
        if not all(isinstance(v, str) for v in texts.values()):
            yield BadLine(number, "text fields must be strings")
            continue
        yield str(data["id"]), Document(**texts, tags=tuple(str(t) for t in tags))


@dataclass
class Tally:
    items: int = 0
    matched: int = 0
    per_rule: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        rules = ", ".join(f"{rule} {n}" for rule, n in self.per_rule.most_common())
        return f"{self.items} items, {self.matched} matched" + (f" ({rules})" if rules else "")


def run(engine: Engine, items: Iterable[tuple[str, Document]], out: TextIO, *,
        only_matches: bool = False, extra: dict[str, Any] | None = None) -> Tally:
    tally = Tally()
    for item_id, document in items:
        tally.items += 1
        matches = engine.match(document)
        if matches:
            tally.matched += 1
            tally.per_rule.update(m.rule_id for m in matches)
        elif only_matches:
            continue
        line = {"id": item_id, "rules": [m.rule_id for m in matches],
                "terms": {m.rule_id: list(m.terms) for m in matches},
                "where": {m.rule_id: [list(w) for w in m.where] for m in matches}}
        if extra is not None:
            line.update(extra.get(item_id, {}))
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
    return tally
