"""Match a document against compiled rules, and say which terms fired, and where.

Pure: `match(document, rules)` needs no database and no network. A document is matched over its
title, summary and content (a phrase never spans two fields), plus its metadata: the feed's name
and tags, the link's host, the language. The terms that fired are the words, phrases, entity
aliases and patterns found in the document outside any NOT — the reason shown to the reader.

This module is the reference evaluator: it walks a rule's tree over the analysed document. The
engine in `monitor.engine` runs the same evaluation, but only for the rules whose terms occur in
the item (found in one Aho-Corasick pass); property tests prove that both agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from monitor.query import TEXT_FIELDS, And, Entity, Match, Meta, Near, Node, Not, Or, Regex
from monitor.text import Field, Span, Term, fold, words


@dataclass(frozen=True)
class Document:
    title: str = ""
    summary: str = ""
    content: str = ""
    source: str = ""  # the feed's name
    url: str = ""
    feed: str = ""  # the feed's URL
    tags: tuple[str, ...] = ()
    lang: str = ""


@dataclass(frozen=True)
class RuleMatch:
    rule_id: str
    rule_name: str
    terms: tuple[str, ...]
    where: tuple[tuple[str, str], ...] = ()  # (term, field) for every term that fired


class CompiledRule(Protocol):
    id: str
    name: str
    expr: Node


# One occurrence: the field it is in, its span there, and whether the span counts characters
# of the dense text (unspaced scripts) rather than words.
Occurrence = tuple[str, Span, bool]


class Evaluation:
    """One document, analysed once; term lookups cached across rules."""

    def __init__(self, document: Document):
        self.document = document
        self.fields = {name: Field(text) for name in TEXT_FIELDS
                       if (text := getattr(document, name))}
        self._cache: dict[tuple[str, str | None], list[Occurrence]] = {}
        self._meta: dict[tuple[str, str], bool] = {}
        self._mentions: dict[tuple[str, str | None], list[tuple[Term, Occurrence]]] = {}
        # The engine's scan fills this with every term key present in the text: a term whose
        # key is absent cannot occur, and is not looked for.
        self.present: set[str] | None = None
        self.present_in: dict[str, set[str]] = {}  # the same, field by field

    # Leaves -----------------------------------------------------------------------------------

    def find(self, term: Term, field: str | None) -> list[Occurrence]:
        key = (term.key, field)
        found = self._cache.get(key)
        if found is None:
            if self.present is not None and term.key not in self.present:
                self._cache[key] = []
                return []
            names = (field,) if field else TEXT_FIELDS
            found = [(name, span, term.substring is not None)
                     for name in names if (f := self.fields.get(name))
                     for span in f.occurrences(term)]
            self._cache[key] = found
        return found

    def mentions(self, entity: Entity) -> list[tuple[Term, Occurrence]]:
        """Alias occurrences that no `exclude` phrase vetoes, if a `context` word is present."""
        key = (entity.name, entity.field)
        found = self._mentions.get(key)
        if found is None:
            found = self._mentions[key] = self._find_mentions(entity)
        return found

    def _find_mentions(self, entity: Entity) -> list[tuple[Term, Occurrence]]:
        present = self.present
        aliases = entity.terms if present is None else \
            [t for t in entity.terms if t.key in present]
        if not aliases:
            return []
        if entity.context and not any(self.find(t, None) for t in entity.context):
            return []
        vetoes = [o for t in entity.exclude for o in self.find(t, entity.field)]
        return [(term, occurrence) for term in aliases
                for occurrence in self.find(term, entity.field)
                if not any(_inside(occurrence, veto) for veto in vetoes)]

    def meta(self, node: Meta) -> bool:
        key = (node.field, node.value)
        result = self._meta.get(key)
        if result is None:
            result = self._meta[key] = _meta(self.document, node.field, node.value)
        return result

    def regex(self, node: Regex) -> bool:
        names = (node.field,) if node.field else TEXT_FIELDS
        return any(node.compiled.search(getattr(self.document, name))
                   for name in names if getattr(self.document, name))

    # The tree ---------------------------------------------------------------------------------

    def occurrences(self, node: Node) -> list[Occurrence]:
        if isinstance(node, Match):
            return self.find(node.term, node.field)
        if isinstance(node, Entity):
            return [occurrence for _, occurrence in self.mentions(node)]
        if isinstance(node, Or):
            return [o for child in node.children for o in self.occurrences(child)]
        raise TypeError(f"no occurrences for {node!r}")

    def labelled(self, node: Node) -> list[tuple[str, Occurrence]]:
        """The occurrences of a NEAR side, each with the name of the term that made it."""
        if isinstance(node, Match):
            return [(self._shown(node.term, o[0], o[1], o[2]), o)
                    for o in self.find(node.term, node.field)]
        if isinstance(node, Entity):
            return [(term.text, o) for term, o in self.mentions(node)]
        if isinstance(node, Or):
            return [pair for child in node.children for pair in self.labelled(child)]
        raise TypeError(f"no occurrences for {node!r}")

    def true(self, node: Node) -> bool:
        if isinstance(node, Match | Entity):
            return bool(self.occurrences(node))
        if isinstance(node, Not):
            return not self.true(node.child)
        if isinstance(node, And):
            return all(self.true(child) for child in node.children)
        if isinstance(node, Or):
            return any(self.true(child) for child in node.children)
        if isinstance(node, Near):
            return self.near(node)
        if isinstance(node, Meta):
            return self.meta(node)
        if isinstance(node, Regex):
            return self.regex(node)
        raise TypeError(f"unresolved query node {node!r}")

    def near(self, node: Near) -> bool:
        left = self.occurrences(node.left)
        if not left:
            return False
        right = self.occurrences(node.right)
        return any(_close(a, b, node.distance) for a in left for b in right)

    def fired(self, node: Node, out: dict[tuple[str, str], None]) -> None:
        """Collect the reasons a true node is true, only from parts that are true themselves
        (every child of a true AND is; only some of a true OR's may be)."""
        if isinstance(node, Match):
            term = node.term
            if self.present is not None and not term.exact and not term.prefix:
                # The engine's scan already knows in which fields the term is.
                for name in (node.field,) if node.field else TEXT_FIELDS:
                    if term.key in self.present_in.get(name, ()):
                        out[(term.text, name)] = None
                return
            for name, span, dense_ in self.find(term, node.field):
                out[(self._shown(term, name, span, dense_), name)] = None
        elif isinstance(node, Entity):
            if self.present is not None and node.plain:
                # No veto to place: the fields each alias is in are all that is needed.
                for term in node.terms:
                    for name in (node.field,) if node.field else TEXT_FIELDS:
                        if term.key in self.present_in.get(name, ()):
                            out[(term.text, name)] = None
                return
            for term, (name, _, _) in self.mentions(node):
                out[(term.text, name)] = None
        elif isinstance(node, Regex):
            names = (node.field,) if node.field else TEXT_FIELDS
            for name in names:
                text = getattr(self.document, name)
                if text and (m := node.compiled.search(text)):
                    out[(m.group(0), name)] = None
        elif isinstance(node, Near):
            # Only the occurrences that are near one another are reasons.
            left, right = self.labelled(node.left), self.labelled(node.right)
            for mine, theirs in ((left, right), (right, left)):
                for label, occurrence in mine:
                    if any(_close(occurrence, other, node.distance) for _, other in theirs):
                        out[(label, occurrence[0])] = None
        elif isinstance(node, And):
            for child in node.children:
                self.fired(child, out)
        elif isinstance(node, Or):
            for child in node.children:
                if self.true(child):
                    self.fired(child, out)
        # Terms under NOT are reasons against, never reasons for; metadata is not a term.

    def _shown(self, term: Term, field: str, span: Span, dense_: bool) -> str:
        """How a term that fired is named: as written in the rule, except that a prefix is
        shown as the word it matched (`portuar*` fired on "portuario")."""
        if term.prefix and not dense_:
            return " ".join(self.fields[field].words[span[0]:span[1]])
        return term.text

    def result(self, rule: CompiledRule) -> RuleMatch | None:
        return self.explain(rule) if self.true(rule.expr) else None

    def explain(self, rule: CompiledRule) -> RuleMatch:
        """The match of a rule known to be true: the terms that fired, and where."""
        fired: dict[tuple[str, str], None] = {}
        self.fired(rule.expr, fired)
        terms = tuple(dict.fromkeys(term for term, _ in fired))
        return RuleMatch(rule.id, rule.name, terms, tuple(fired))


def _inside(occurrence: Occurrence, veto: Occurrence) -> bool:
    (field, (start, end), dense_), (vfield, (vstart, vend), vdense) = occurrence, veto
    if field != vfield:
        return False
    if dense_ != vdense:
        return False
    return vstart <= start and end <= vend


def _close(a: Occurrence, b: Occurrence, distance: int) -> bool:
    """Within `distance` words of each other (characters, in unspaced scripts), in one field.
    A word-counted and a character-counted occurrence cannot be measured against each other:
    being in the same field is then close enough."""
    if a[0] != b[0]:
        return False
    if a[2] != b[2]:
        return True
    (start_a, end_a), (start_b, end_b) = a[1], b[1]
    gap = max(start_b - end_a, start_a - end_b, 0)
    return gap <= distance


def _meta(document: Document, field: str, value: str) -> bool:
    wanted = fold(value)
    if field == "tag":
        return wanted in {fold(tag) for tag in document.tags}
    if field == "lang":
        lang = fold(document.lang).replace("_", "-")
        return bool(lang) and (lang == wanted or lang.split("-")[0] == wanted)
    if field == "domain":
        try:
            host = (urlsplit(document.url).hostname or "").rstrip(".")
        except ValueError:
            return False
        return bool(host) and (host == wanted or host.endswith("." + wanted))
    if field == "feed":  # a rule's `feeds:` scope, by the feed's URL or name
        return value in (document.feed, document.source)
    if field == "source":
        name, want = words(fold(document.source)), words(wanted)
        return bool(want) and any(name[i:i + len(want)] == want
                                  for i in range(len(name) - len(want) + 1))
    raise ValueError(f"unknown metadata field {field!r}")


def evaluate(expr: Node, document: Document) -> bool:
    return Evaluation(document).true(expr)


def match(document: Document, rules: Iterable[CompiledRule]) -> list[RuleMatch]:
    """Every rule the document matches, with the terms that fired for each (reference)."""
    evaluation = Evaluation(document)
    return [m for rule in rules if (m := evaluation.result(rule)) is not None]
