"""The matching engine: the terms of all rules are looked up in an item in one pass over its
words, and only the rules whose terms occur in it are evaluated.

Each rule gets a trigger: a set of term keys at least one of which must be in an item for the
rule to have any chance (for AND, the keys of its most selective child; for OR, the keys of all
children; NOT, regular expressions and metadata give none, so a rule made only of those is
always evaluated). Rules that cannot match without a term in the item are skipped; the others
are evaluated exactly as the reference evaluator in `monitor.match` does, so both give the same
matches — `tests/test_engine.py` checks it on random rules and texts.

How the terms are found is `_Finder`'s business: in one pass over an item's folded words, a
set lookup for single words, the words joined by spaces for phrases and prefixes, the dense text
for unspaced scripts; exact terms the same way, in the words as written. Compiling is CPU work:
the daemon does it off the event loop and swaps the new engine in whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import ahocorasick

from monitor.match import CompiledRule, Document, Evaluation, RuleMatch
from monitor.query import And, Entity, Match, Meta, Near, Node, Not, Or, Regex
from monitor.text import Field, Term

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
        # Each side occurs only where it is true: testing that first skips measuring distances.
        left, right = _test(node.left), _test(node.right)
        return lambda ev: left(ev) and right(ev) and ev.near(node)
    if isinstance(node, Meta):
        return lambda ev: ev.meta(node)
    if isinstance(node, Regex):
        return lambda ev: ev.regex(node)
    raise TypeError(f"unresolved query node {node!r}")


Reasons = dict[tuple[str, str], None]  # (term, field) for every term that fired, in order
Explain = Callable[[Evaluation, Reasons], None]


def _no_reasons(ev: Evaluation, out: Reasons) -> None:
    pass


def _explain(node: Node) -> Explain:
    """The reasons a true node is true, collected as `Evaluation.fired` collects them, as
    closures for the common nodes; NEAR, patterns, exact and prefix terms and entities with
    vetoes are left to `Evaluation.fired`, as they need the occurrences themselves."""
    if isinstance(node, Not | Meta):
        return _no_reasons
    if isinstance(node, And):
        children = tuple(_explain(c) for c in node.children)

        def all_(ev: Evaluation, out: Reasons) -> None:
            for child in children:
                child(ev, out)
        return all_
    if isinstance(node, Or):
        branches = tuple((_test(c), _explain(c)) for c in node.children)

        def any_(ev: Evaluation, out: Reasons) -> None:
            for true, explain in branches:
                if true(ev):
                    explain(ev, out)
        return any_
    if isinstance(node, Match) and not node.term.exact and not node.term.prefix:
        terms = ((node.term.key, node.term.text),)
    elif isinstance(node, Entity) and node.plain:
        terms = tuple((t.key, t.text) for t in node.terms)
    else:
        return lambda ev, out: ev.fired(node, out)
    # The scan knows in which fields each term is. `present_in` lists the fields in the
    # document's order, as `Evaluation.fired` goes through them.
    field = node.field
    if field is None:
        def anywhere(ev: Evaluation, out: Reasons) -> None:
            present = ev.present
            for key, text in terms:
                if key in present:  # type: ignore[operator]
                    for name, here in ev.present_in.items():
                        if key in here:
                            out[(text, name)] = None
        return anywhere

    def in_field(ev: Evaluation, out: Reasons) -> None:
        here = ev.present_in.get(field, ())
        for key, text in terms:
            if key in here:
                out[(text, field)] = None
    return in_field


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


def _automaton(needles: dict[str, str]) -> ahocorasick.Automaton | None:
    """An automaton that finds the needles and gives their keys, if there are any."""
    if not needles:
        return None
    automaton = ahocorasick.Automaton()
    for needle, key in needles.items():
        automaton.add_word(needle, key)
    automaton.make_automaton()
    return automaton


class _Finder:
    """Which terms occur in a field: in its folded words and dense text or, for exact terms, in
    its words and dense text as written.

    A single word is looked up in the set of the field's words; a phrase in the words joined by
    single spaces and wrapped in spaces (so that it matches whole words only), and only when its
    first word is there; a prefix by an Aho-Corasick automaton over those joined words; a
    substring by another over the dense text. Each automaton scans only the text its terms are
    in: a substring can be left with no unspaced character ("abcั" is "abc" once the dense copy
    drops the mark), and must not be found inside a word."""

    def __init__(self, terms: Iterable[Term], *, exact: bool):
        self.exact = exact
        self.mark = "=" if exact else ""  # what a single word's key has in front of the word
        words: set[str] = set()
        phrases: dict[str, dict[str, str]] = {}  # first word: each phrase's needle and key
        prefixes: dict[str, str] = {}  # needle: key
        substrings: dict[str, str] = {}
        for term in terms:
            if term.substring is not None:
                substrings[term.substring] = term.key
                continue
            tokens = term.written if exact else term.words
            needle = " " + " ".join(tokens) + ("" if term.prefix else " ")
            if term.prefix:
                prefixes[needle] = term.key
            elif len(tokens) > 1:
                phrases.setdefault(tokens[0], {})[needle] = term.key
            elif tokens:
                words.add(tokens[0])
        self.phrases = {word: tuple(found.items()) for word, found in phrases.items()}
        self.phrase_starts = frozenset(self.phrases)
        # The words worth noting. A set, not a frozenset: intersecting it with a field's words
        # then gives a set, which the other finds are added to.
        self.words = words | self.phrase_starts
        self.prefixes = _automaton(prefixes)
        self.substrings = _automaton(substrings)

    def find(self, field: Field) -> set[str]:
        """The keys of the terms in the field (and a few other words that are there)."""
        tokens = field.written() if self.exact else field.words
        found = self.words.intersection(tokens)
        starts = found & self.phrase_starts
        if self.mark:
            found = {self.mark + word for word in found}
        if starts or self.prefixes is not None:
            joined = " " + " ".join(tokens) + " "
            found.update([key for word in starts for needle, key in self.phrases[word]
                          if needle in joined])
            if self.prefixes is not None:
                found.update([key for _, key in self.prefixes.iter(joined)])
        if self.substrings is not None:
            dense = field.written_dense() if self.exact else field.dense
            if dense:
                found.update([key for _, key in self.substrings.iter(dense)])
        return found


class Engine:
    """Rules compiled once; `match(document)` gives what `monitor.match.match` gives."""

    def __init__(self, rules: Sequence[CompiledRule]):
        self.rules = tuple(rules)
        self.tests = tuple(_test(rule.expr) for rule in self.rules)
        self.explainers = tuple(_explain(rule.expr) for rule in self.rules)
        self.always: list[int] = []
        # Every term is looked for, so that the scan also tells which are absent.
        terms: dict[str, Term] = {}
        by_key: dict[str, list[int]] = {}
        for index, rule in enumerate(self.rules):
            terms.update((term.key, term) for term in _terms(rule.expr))
            keys = trigger(rule.expr)
            if keys is None:
                self.always.append(index)
            else:
                for key in keys:
                    by_key.setdefault(key, []).append(index)
        self.triggers = {key: tuple(indexes) for key, indexes in by_key.items()}
        self.trigger_keys = frozenset(self.triggers)
        self.folded = _Finder((t for t in terms.values() if not t.exact), exact=False)
        exact = [t for t in terms.values() if t.exact]
        self.exact = _Finder(exact, exact=True) if exact else None

    def candidates(self, evaluation: Evaluation) -> list[int]:
        """The rules that may match: triggered by a term present, or always evaluated. Also
        tells the evaluation which terms are present at all, field by field."""
        present: set[str] = set()
        for name, field in evaluation.fields.items():
            here = self.folded.find(field)
            if self.exact is not None:
                here |= self.exact.find(field)
            evaluation.present_in[name] = here
            present |= here
        evaluation.present = present
        triggers = self.triggers
        found = set(self.always)
        found.update(*[triggers[key] for key in present & self.trigger_keys])
        return sorted(found)

    def match(self, document: Document) -> list[RuleMatch]:
        evaluation = Evaluation(document)
        tests, explainers, matches = self.tests, self.explainers, []
        for index in self.candidates(evaluation):
            if tests[index](evaluation):
                fired: Reasons = {}
                explainers[index](evaluation, fired)
                rule = self.rules[index]
                terms = tuple(dict.fromkeys([term for term, _ in fired]))  # as `explain` does
                matches.append(RuleMatch(rule.id, rule.name, terms, tuple(fired)))
        return matches
