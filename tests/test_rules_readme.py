"""Every construct documented in rules/README.md, run as written there."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from monitor.match import Document, evaluate
from monitor.query import Entity, Regex, parse, resolve, walk
from monitor.rules import _with_regexes, compile_regex
from monitor.text import Term

README = (REPO / "rules" / "README.md").read_text(encoding="utf-8")
TABLE = README.split("<!-- constructs:start -->")[1].split("<!-- constructs:end -->")[0]
ENTITIES = {
    "cosco": tuple(Term.parse(a) for a in
                   ["COSCO Shipping", "China COSCO Shipping", "中远海运", "中遠海運"]),
    "cosco-sports": (Term.parse("Cosco India"),),
    "cosco-ship": Entity("cosco-ship", (Term.parse("Cosco"),),
                         context=(Term.parse("port"), Term.parse("shipping"))),
    "chancay": Entity("chancay", (Term.parse("Chancay"),),
                      exclude=(Term.parse("Chancay culture"),)),
}
EXAMPLE = re.compile(r'(?:(title|summary|content|source|url|tags|lang) )?"([^"]+)"')


def document(example: str) -> Document:
    """`"text"` is a title; `summary "text"`, `source "…"`, `tags "a,b"` … fill other parts."""
    parts: dict = {}
    for field, text in EXAMPLE.findall(example):
        parts[field or "title"] = tuple(text.split(",")) if field == "tags" else text
    return Document(**parts)


def _rows() -> list[tuple[str, str, list[str], list[str]]]:
    rows = []
    for line in TABLE.strip().splitlines()[2:]:
        construct, query, yes, no = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append((construct, re.fullmatch(r"`(.+)`", query).group(1),
                     [e.strip() for e in yes.split(" ; ")], [e.strip() for e in no.split(" ; ")]))
    return rows


ROWS = _rows()


def test_the_table_documents_every_construct() -> None:
    constructs = {row[0] for row in ROWS}
    for needed in ("word", "phrase", "adjacency (AND)", "AND", "OR", "NOT", "minus",
                   "parentheses", "entity", "unspaced scripts", "case and accents", "NEAR",
                   "prefix", "exact", "title field", "summary field", "content field",
                   "source", "domain", "tag", "lang", "regular expression", "entity context",
                   "entity exclude"):
        assert needed in constructs
    assert all(yes and no for _, _, yes, no in ROWS)


@pytest.mark.parametrize("construct,query,matches,misses", ROWS, ids=[r[0] for r in ROWS])
def test_construct(construct: str, query: str, matches: list[str], misses: list[str]) -> None:
    tree = parse(query)
    patterns = {n.pattern: compile_regex(n.pattern) for n in walk(tree) if isinstance(n, Regex)}
    expr = _with_regexes(resolve(tree, ENTITIES), patterns)
    for example in matches:
        assert evaluate(expr, document(example)), f"{query!r} should match {example}"
    for example in misses:
        assert not evaluate(expr, document(example)), f"{query!r} should not match {example}"
