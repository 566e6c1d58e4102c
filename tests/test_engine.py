"""The engine (Aho-Corasick prefilter) against the reference evaluator, on random rules and
texts: both must give the same matches, terms and places, always."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monitor.engine import Engine, trigger
from monitor.match import Document, evaluate, match
from monitor.query import Entity, Node, QuerySyntaxError, parse, resolve
from monitor.text import Term

VOCAB = ["port", "ports", "puerto", "Chancay", "chancay", "Cosco", "COSCO", "costco", "Perú",
         "peru", "China", "trade", "free", "FTA", "fta", "shipping", "culture", "中国", "秘鲁",
         "钱凯港", "港口", "中远海运", "de", "la", "near", "x\u0301y", "Пу́тин", "Å", "i̇",
         "㎏", "ℂosco"]
SEPARATORS = [" ", " ", " ", ", ", "-", ". ", "", "\n"]
ENTITIES = {
    "cosco": Entity("cosco", (Term.parse("COSCO Shipping"), Term.parse("中远海运"),
                              Term.parse("cosco")),
                    context=(Term.parse("port"), Term.parse("港口")),
                    exclude=(Term.parse("cosco sports"),)),
    "chancay": Entity("chancay", (Term.parse("chancay"), Term.parse("钱凯港")),
                      exclude=(Term.parse("chancay culture"),)),
    "peru": Entity("peru", (Term.parse("peru"), Term.parse("秘鲁"))),
}


@dataclass
class Rule:
    id: str
    name: str
    expr: Node


texts = st.lists(st.tuples(st.sampled_from(VOCAB), st.sampled_from(SEPARATORS)),
                 max_size=14).map(lambda parts: "".join(w + s for w, s in parts))


def leaf() -> st.SearchStrategy[str]:
    word = st.sampled_from([w for w in VOCAB if w not in ("near",)])
    return st.one_of(
        word,
        word.map(lambda w: f"={w}"),
        st.sampled_from(["por*", "ship*", "chan*", "cost*"]),
        st.lists(word, min_size=2, max_size=3).map(lambda ws: '"' + " ".join(ws) + '"'),
        st.sampled_from(["@cosco", "@chancay", "@peru"]),
        st.sampled_from(["title:", "summary:", "content:"]).flatmap(
            lambda f: word.map(lambda w: f + w)),
        st.sampled_from(["tag:peru", "lang:es", "domain:example.org", "source:andina"]),
        st.sampled_from(["/[Cc]hancay/", "title:/(?i)fta/"]),
    )


def near_or_leaf(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    nearable = st.one_of(
        st.sampled_from([w for w in VOCAB if w not in ("near",)]),
        st.sampled_from(["@cosco", "@chancay", '"free trade"']))
    return st.one_of(
        st.tuples(nearable, st.integers(1, 4), nearable).map(
            lambda t: f"{t[0]} NEAR/{t[1]} {t[2]}"),
        st.tuples(children, children).map(lambda t: f"({t[0]} OR {t[1]})"),
        st.tuples(children, children).map(lambda t: f"({t[0]} AND {t[1]})"),
        st.tuples(children, children).map(lambda t: f"{t[0]} {t[1]}"),
        children.map(lambda c: f"-{c}" if not c.startswith(("-", "=")) else f"NOT {c}"),
    )


queries = st.recursive(leaf(), near_or_leaf, max_leaves=6)
documents = st.builds(Document, title=texts, summary=texts, content=texts,
                      source=st.sampled_from(["", "Andina", "El Comercio"]),
                      url=st.sampled_from(["", "https://www.example.org/a/b", "https://x.pe/"]),
                      tags=st.sampled_from([(), ("peru",), ("es", "china")]),
                      lang=st.sampled_from(["", "es-PE", "en", "zh"]))


def compile_rule(i: int, query: str) -> Rule | None:
    from monitor.rules import compile_regex, _with_regexes
    from monitor.query import Regex, walk

    try:
        tree = parse(query)
    except QuerySyntaxError:
        return None  # refused by the loader, as it should be (e.g. "=㎏")
    patterns = {n.pattern: compile_regex(n.pattern) for n in walk(tree)
                if isinstance(n, Regex)}
    expr = _with_regexes(resolve(tree, ENTITIES), patterns)
    if evaluate(expr, Document()):
        return None  # only negative: refused by the loader
    return Rule(f"r{i}", f"Rule {i}", expr)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(queries, min_size=1, max_size=8), st.lists(documents, min_size=1, max_size=4))
def test_engine_and_reference_agree(query_list: list[str], docs: list[Document]) -> None:
    rules = [r for i, q in enumerate(query_list) if (r := compile_rule(i, q)) is not None]
    assume(rules)
    engine = Engine(rules)
    for document in docs:
        assert engine.match(document) == match(document, rules)


def test_a_rule_whose_terms_are_absent_is_not_evaluated() -> None:
    rules = [compile_rule(0, "cosco port"), compile_rule(1, "chancay -culture"),
             compile_rule(2, "tag:peru OR /x/")]
    engine = Engine([r for r in rules if r])
    from monitor.match import Evaluation
    assert engine.candidates(Evaluation(Document(title="nothing here"))) == [2]
    # For AND, the rarer-looking term is the trigger: "cosco", not "port".
    assert trigger(rules[0].expr) == frozenset({"cosco"})
    assert engine.candidates(Evaluation(Document(title="the port"))) == [2]
    assert engine.candidates(Evaluation(Document(title="Cosco, the port"))) == [0, 2]
    assert engine.candidates(Evaluation(Document(summary="Chancay culture"))) == [1, 2]


def test_a_substring_key_is_looked_for_only_in_the_dense_text() -> None:
    # The dense copy drops the Thai mark, leaving the key "abc": the reference looks for it only
    # in the dense text of unspaced scripts, never inside a word.
    rules = [r for r in (compile_rule(0, "abc\u0e31"), compile_rule(1, "por*")) if r]
    assert len(rules) == 2
    for document in (Document(title="xabcx port"), Document(title="x abcั port")):
        assert Engine(rules).match(document) == match(document, rules)


def test_exact_terms_are_looked_for_in_the_words_as_written() -> None:
    # Folding can join what is written apart: "㎏port" folds to the one word "kgport", and a
    # combining mark that splits "po҃rt" as written is dropped. The exact term goes by the
    # words as written; the others by the folded words.
    rules = [r for r in (compile_rule(0, "=port"), compile_rule(1, "port"), compile_rule(2, "=po"),
                         compile_rule(3, '="kg port"'), compile_rule(4, "=中国"))
             if r]
    assert len(rules) == 5
    for document in (Document(content="㎏port "), Document(title="po\u0483rt"),
                     Document(title="kg port", summary="中㎏国")):
        assert Engine(rules).match(document) == match(document, rules)
    assert [m.rule_id for m in Engine(rules).match(Document(content="㎏port "))] == ["r0"]
