"""The matching engine: every term of every rule in one Aho-Corasick automaton, so an item is
scanned once and only the rules whose terms occur in it are evaluated.

Each rule gets a trigger: a set of automaton keys at least one of which must be in an item for
the rule to have any chance (for AND, the keys of its most selective child; for OR, the keys of
all children; NOT, regular expressions and metadata give none, so a rule made only of those is
always evaluated). Rules that cannot match without a term in the item are skipped; the others
are evaluated exactly as the reference evaluator in `monitor.match` does, so both give the same
matches — `tests/test_engine.py` checks it on random rules and texts.

Keys are folded words joined by single spaces and wrapped in spaces (" puerto de chancay "),
looked for in the item's folded words joined the same way, so a key only matches whole words;
a prefix key has no closing space (" portuar"); unspaced-script keys are plain substrings,
looked for in the dense text. Compiling is CPU work: the daemon does it off the event loop and
swaps the new engine in whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ahocorasick

from monitor.match import CompiledRule, Document, Evaluation, RuleMatch
from monitor.query import And, Entity, Match, Meta, Near, Node, Not, Or, Regex
from monitor.text import Term

Trigger = frozenset[str] | None  # None: cannot be told from the text alone


def _selectivity(trigger: frozenset[str]) -> tuple[int, int]:
    """Higher is rarer: a trigger whose shortest key is long, with few keys."""
    return min(len(k) for k in trigger), -len(trigger)


def trigger(node: Node) -> Trigger:
    if isinstance(node, Match):
        return frozenset({node.term.key})
    if isinstance(node, Entity):
        return frozenset(t.key for t in node.terms)
    if isinstance(node, Near):
        sides = [t for t in (trigger(node.left), trigger(node.right)) if t is not None]
        return max(sides, key=_selectivity) if sides else None
    if isinstance(node, And):
        children = [t for t in map(trigger, node.children) if t is not None]
        return max(children, key=_selectivity) if children else None
    if isinstance(node, Or):
        children = [trigger(child) for child in node.children]
        if any(t is None for t in children):
            return None
        return frozenset().union(*children)  # type: ignore[arg-type]
    if isinstance(node, Not | Regex | Meta):
        return None
    raise TypeError(f"unresolved query node {node!r}")


Test = Callable[[Evaluation], bool]


def _test(node: Node) -> Test:
    """The rule's tree as nested closures: the same truth as `Evaluation.true`, without the
    dispatch on node types at every step, and with absent terms rejected at once."""
    if isinstance(node, Match):
        term, field, key = node.term, node.field, node.term.key
        if not term.exact:
            # The scan looks for exactly this key in each field's words (or dense text): being
            # present there is occurring there.
            if field is None:
                return lambda ev: key in ev.present  # type: ignore[operator]
            return lambda ev: key in ev.present_in.get(field, ())

        def match_(ev: Evaluation) -> bool:
            return key in ev.present and bool(ev.find(term, field))  # type: ignore[operator]
        return match_
    if isinstance(node, Entity):
        keys = frozenset(t.key for t in node.terms)
        if node.field is None and node.plain:
            context = frozenset(t.key for t in node.context)

            def plain_entity(ev: Evaluation) -> bool:
                present = ev.present
                return not keys.isdisjoint(present) and (  # type: ignore[arg-type]
                    not context or not context.isdisjoint(present))  # type: ignore[arg-type]
            return plain_entity

        def entity(ev: Evaluation) -> bool:
            return not keys.isdisjoint(ev.present) and bool(  # type: ignore[arg-type]
                ev.mentions(node))
        return entity
    if isinstance(node, Not):
        child = _test(node.child)
        return lambda ev: not child(ev)
    if isinstance(node, And):
        children = tuple(_test(c) for c in node.children)

        def all_(ev: Evaluation) -> bool:
            for child in children:
                if not child(ev):
                    return False
            return True
        return all_
    if isinstance(node, Or):
        children = tuple(_test(c) for c in node.children)

        def any_(ev: Evaluation) -> bool:
            for child in children:
                if child(ev):
                    return True
            return False
        return any_
    if isinstance(node, Near):
        return lambda ev: ev.near(node)
    if isinstance(node, Meta):
        return lambda ev: ev.meta(node)
    if isinstance(node, Regex):
        return lambda ev: ev.regex(node)
    raise TypeError(f"unresolved query node {node!r}")


def _terms(node: Node) -> list[Term]:
    if isinstance(node, Match):
        return [node.term]
    if isinstance(node, Entity):
        return [*node.terms, *node.context, *node.exclude]
    if isinstance(node, Not):
        return _terms(node.child)
    if isinstance(node, Near):
        return _terms(node.left) + _terms(node.right)
    if isinstance(node, And | Or):
        return [t for child in node.children for t in _terms(child)]
    return []


class Engine:
    """Rules compiled once; `match(document)` gives what `monitor.match.match` gives."""

    def __init__(self, rules: Sequence[CompiledRule]):
        self.rules = tuple(rules)
        self.tests = tuple(_test(rule.expr) for rule in self.rules)
        self.always: list[int] = []
        by_key: dict[str, list[int]] = {}
        scanned: set[str] = set()  # keys the automaton looks for
        for index, rule in enumerate(self.rules):
            # Every term is looked for, so that the scan also tells which are absent: a single
            # word in the set of the item's words, anything else by the automaton.
            for term in _terms(rule.expr):
                by_key.setdefault(term.key, [])
                if term.substring is not None or term.prefix or len(term.words) > 1:
                    scanned.add(term.key)
            keys = trigger(rule.expr)
            if keys is None:
                self.always.append(index)
            else:
                for key in keys:
                    by_key[key].append(index)
        self.triggers = {key: tuple(indexes) for key, indexes in by_key.items() if indexes}
        self.trigger_keys = frozenset(self.triggers)
        self.automaton: ahocorasick.Automaton | None = None
        if scanned:
            automaton = ahocorasick.Automaton()
            for key in scanned:
                automaton.add_word(key, key)
            automaton.make_automaton()
            self.automaton = automaton

    def candidates(self, evaluation: Evaluation) -> list[int]:
        """The rules that may match: triggered by a term present, or always evaluated. Also
        tells the evaluation which terms are present at all."""
        present: set[str] = set()
        scan = self.automaton.iter if self.automaton is not None else None
        for name, field in evaluation.fields.items():
            # Every word of the field (single-word keys are the words themselves), and every
            # phrase, prefix and substring key the automaton finds.
            here = set(field.words)
            if scan is not None:
                if field.words:
                    here.update([key for _, key in scan(" " + " ".join(field.words) + " ")])
                if field.dense:
                    here.update([key for _, key in scan(field.dense)])
            evaluation.present_in[name] = here
            present |= here
        evaluation.present = present
        triggers = self.triggers
        found = set(self.always)
        found.update(*[triggers[key] for key in present & self.trigger_keys])
        return sorted(found)

    def match(self, document: Document) -> list[RuleMatch]:
        evaluation = Evaluation(document)
        tests = self.tests
        return [evaluation.explain(self.rules[index]) for index in self.candidates(evaluation)
                if tests[index](evaluation)]
