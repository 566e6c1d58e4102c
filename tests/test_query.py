"""The query parser and the matcher, construct by construct and error by error."""

from __future__ import annotations

import pytest

from monitor.match import Document, match
from monitor.query import And, Match, Not, Or, QuerySyntaxError, parse, resolve
from monitor.text import Field, Term, locate


def words(node: object) -> object:
    """The tree with each term replaced by its words, for readable comparisons."""
    if isinstance(node, Match):
        return " ".join(node.term.words) or node.term.substring
    if isinstance(node, Not):
        return ("NOT", words(node.child))
    if isinstance(node, And):
        return ("AND", *[words(c) for c in node.children])
    if isinstance(node, Or):
        return ("OR", *[words(c) for c in node.children])
    return node


@pytest.mark.parametrize("query,tree", [
    ("a b OR c", ("OR", ("AND", "a", "b"), "c")),
    ("a AND b OR c AND d", ("OR", ("AND", "a", "b"), ("AND", "c", "d"))),
    ("a (b OR c)", ("AND", "a", ("OR", "b", "c"))),
    ("NOT a b", ("AND", ("NOT", "a"), "b")),
    ("-a -\"b c\"", ("AND", ("NOT", "a"), ("NOT", "b c"))),
    ("NOT NOT a", ("NOT", ("NOT", "a"))),
    ("Peru-China", "peru china"),
    ("U.S.", "u s"),
    ("a and b", ("AND", "a", "and", "b")),
    ("中国—秘鲁", "中国秘鲁"),
    ("-(a OR b) c", ("AND", ("NOT", ("OR", "a", "b")), "c")),
])
def test_precedence_and_terms(query: str, tree: object) -> None:
    assert words(parse(query)) == tree


@pytest.mark.parametrize("query,column,message", [
    ("", 1, "empty"),
    ("   ", 1, "empty"),
    ("port AND (chancay", 10, "unbalanced '('"),
    ("port)", 5, "unbalanced ')'"),
    ('port "free trade', 6, "unterminated phrase"),
    ("port AND", 9, "ends where a term"),
    ("OR port", 1, "'OR' where a term"),
    ("a AND OR b", 7, "'OR' where a term"),
    ("()", 1, "empty parentheses"),
    ("a @", 3, "bad entity"),
    ("a @-x", 3, "bad entity"),
    ('a ""', 3, "no letters or digits"),
    ("a !!!", 3, "no letters or digits"),
    ("NOT", 4, "ends where a term"),
])
def test_syntax_errors_carry_a_column(query: str, column: int, message: str) -> None:
    with pytest.raises(QuerySyntaxError) as error:
        parse(query)
    assert error.value.column == column
    assert message in error.value.message


def rules(**queries: str) -> list:
    entities = {"cosco": (Term.parse("COSCO Shipping"), Term.parse("中远海运"))}

    class R:
        def __init__(self, rule_id: str, query: str):
            self.id, self.name, self.expr = rule_id, rule_id.title(), resolve(parse(query),
                                                                               entities)
    return [R(k.replace("_", "-"), v) for k, v in queries.items()]


def test_match_reports_every_rule_and_the_terms_that_fired() -> None:
    document = Document(title="COSCO Shipping opens the port of Chancay",
                        summary="Costco is not involved. 中远海运 said so.")
    found = match(document, rules(cosco="@cosco -costco_x", port="port chancay -costco",
                                  either="chancay OR callao", none="callao"))
    assert [(m.rule_id, m.terms) for m in found] == [
        ("cosco", ("COSCO Shipping", "中远海运")),
        ("either", ("chancay",)),
    ]


def test_terms_under_not_are_never_reasons() -> None:
    [m] = match(Document(title="Chancay port, not Callao"),
                rules(r="chancay (port OR NOT callao) -(lima AND callao)"))
    assert m.terms == ("chancay", "port")


def test_phrases_do_not_span_fields() -> None:
    document = Document(title="Talks on free", summary="trade resume")
    assert match(document, rules(r='"free trade"')) == []
    assert match(document, rules(r="free trade")) != []


def test_whole_words_and_folding() -> None:
    field = Field("El PERÚ y la ＣＯＳＣＯ Shipping; Straße; naïve")
    assert field.contains(Term.parse("peru"))
    assert field.contains(Term.parse("cosco shipping"))  # full-width letters fold
    assert field.contains(Term.parse("strasse"))
    assert field.contains(Term.parse("NAIVE"))
    assert not field.contains(Term.parse("per"))
    assert not field.contains(Term.parse("shipping cosco"))


def test_unspaced_scripts_match_as_substrings_ignoring_punctuation() -> None:
    field = Field("中国-秘鲁自由贸易协定升级版。東京では")
    assert field.contains(Term.parse("中国—秘鲁自由贸易协定"))
    assert field.contains(Term.parse("秘鲁"))
    assert field.contains(Term.parse("東京"))
    assert not field.contains(Term.parse("中国智利"))
    assert not Field("Peru and China").contains(Term.parse("秘鲁"))


def test_locate_points_into_the_original_text() -> None:
    text = "El megapuerto de Chancay (Perú–China) y 中遠海運, PERU."
    spans = locate(text, [Term.parse("peru"), Term.parse("中遠海運"),
                          Term.parse("megapuerto de chancay")])
    assert [text[s:e] for s, e in spans] == ["megapuerto de Chancay", "Perú", "中遠海運", "PERU"]


def test_every_fast_path_of_fold_agrees_with_its_definition() -> None:
    """fold() = NFKD, without combining marks (and U+0300–U+036F), casefolded — whichever
    shortcut it takes for the text at hand."""
    import unicodedata

    from monitor.text import fold

    def definition(text: str) -> str:
        decomposed = unicodedata.normalize("NFKD", text)
        kept = "".join(c for c in decomposed if not unicodedata.combining(c)
                       and not "\u0300" <= c <= "\u036f")
        return kept.casefold()

    for code in range(0x20000):
        if 0xD800 <= code < 0xE000:
            continue
        c = chr(code)
        for text in (c, f"Pé{c}", f"{c}中", f"a{c}\u0e31"):
            assert fold(text) == definition(text), (hex(code), text)


def test_the_ascii_word_shortcut_agrees_with_the_general_rule() -> None:
    import random
    import string

    from monitor.text import _SPACED_WORD, words

    rng = random.Random(5)
    alphabet = string.printable
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))).lower()
        assert words(text) == _SPACED_WORD.findall(text), text


def test_the_latin1_shortcuts_agree_with_the_general_way() -> None:
    import random
    import unicodedata

    from monitor.text import _LATIN1_FOLDED, _LATIN1_WRITTEN, _LATIN_ACCENTS, _latin1_words, \
        fold, words, written_words

    def check(text: str) -> None:
        found = _latin1_words(text, _LATIN1_FOLDED)
        assert found is None or found == words(fold(text)), text
        written = _LATIN_ACCENTS.sub("", unicodedata.normalize("NFC", text))
        assert _latin1_words(text, _LATIN1_WRITTEN) == words(written), text

    latin1 = [chr(code) for code in range(256)]
    for c in latin1:
        for text in (c, f"Pé{c}x", f"{c}{c}A", f"a {c}", f"\u00c9{c}\u00f1"):
            check(text)
    rng = random.Random(5)
    for _ in range(5000):
        check("".join(rng.choices(latin1, k=rng.randint(0, 40))))
    assert _latin1_words("El PERÚ, ¡ÑANDÚ!  ª", _LATIN1_FOLDED) == ["el", "peru", "nandu", "a"]
    assert written_words("El PERÚ, ¡ÑANDÚ!  ª") == ["El", "PERÚ", "ÑANDÚ", "ª"]
    # A character that folds to several (ß) or beyond Latin-1 (µ), or text that is not all
    # Latin-1 (the dash): the general way.
    assert _latin1_words("Straße", _LATIN1_FOLDED) is None
    assert _latin1_words("½ µ", _LATIN1_FOLDED) is None
    assert _latin1_words("Perú–China", _LATIN1_FOLDED) is None
    assert _latin1_words("Perú–China", _LATIN1_WRITTEN) is None
    assert Field("Straße Perú–China").words == ["strasse", "peru", "china"]
    assert written_words("Straße Perú–China") == ["Straße", "Perú", "China"]


def test_reasons_come_only_from_parts_that_are_true() -> None:
    [m] = match(Document(title="Southcom and the U.S. military", summary="the terminal portuario"),
                rules(r="(=SOUTHCOM AND navy) OR (southcom military) OR portuar*"))
    assert m.terms == ("southcom", "military", "portuario")
    assert ("portuario", "summary") in m.where


def test_near_names_only_the_occurrences_that_are_near() -> None:
    [m] = match(Document(title="cosco port and far far far away lima"),
                rules(r="cosco NEAR/2 (port OR lima)"))
    assert m.terms == ("cosco", "port")


@pytest.mark.parametrize("query,message", [
    ("a NEAR/ b", "NEAR/ needs a number"), ("a NEAR/x b", "NEAR/ needs a number"),
    ("/foo/i", "closing /"), ("=Port*", "cannot end with *"), ("=℃", "cannot be matched"),
])
def test_more_syntax_errors(query: str, message: str) -> None:
    with pytest.raises(QuerySyntaxError, match=message):
        parse(query)
