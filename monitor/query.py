"""The query language: parse a rule's `query:` string into a small expression tree.

    query   := or
    or      := and ("OR" and)*
    and     := unary (["AND"] unary)*              adjacency means AND
    unary   := ("NOT" | "-") unary | near
    near    := primary ("NEAR/" n primary)*         within n words, either order
    primary := "(" or ")" | field ":" primary | "=" word-or-phrase | "phrase" | @entity
             | /regex/ | word | word*

Text fields: `title:`, `summary:`, `content:` (a scope pushed down to every term under it).
Metadata fields: `source:` (feed name), `domain:` (link host), `tag:` (feed tag), `lang:`.
Operators are upper-case; `and`, `or`, `not`, `near` in lower case are ordinary words. A `-`
negates only at the start of a token (`-costco`); inside a word it is part of it (`Peru-China`).
Columns are 1-based offsets into the query string, for error messages.

Pure: no I/O. Entity names are checked by `monitor.rules`, which knows the entities; regular
expressions are compiled there too (with RE2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from typing import Any

from monitor.text import Term

TEXT_FIELDS = ("title", "summary", "content")
META_FIELDS = ("source", "domain", "tag", "lang")
DEFAULT_NEAR = 10
MAX_NEAR = 1000

_ENTITY = re.compile(r"@([A-Za-z0-9][A-Za-z0-9_-]*)")
_WORD_END = re.compile(r'[\s()"]')
_FIELD = re.compile(rf"({'|'.join(TEXT_FIELDS + META_FIELDS)}):")
_NEAR = re.compile(r"NEAR(?:/(\d+))?")


class QuerySyntaxError(ValueError):
    def __init__(self, message: str, column: int):
        self.message = message
        self.column = column
        super().__init__(f"column {column}: {message}")


@dataclass(frozen=True)
class Match:
    """A word, phrase or prefix in the item's text; `term` says how to find it."""

    term: Term
    column: int
    field: str | None = None  # title, summary or content; None: any of them


@dataclass(frozen=True)
class EntityRef:
    name: str
    column: int
    field: str | None = None


@dataclass(frozen=True)
class Entity:
    """An entity reference resolved to its aliases, context words and vetoing phrases."""

    name: str
    terms: tuple[Term, ...]
    field: str | None = None
    context: tuple[Term, ...] = ()
    exclude: tuple[Term, ...] = ()
    # No veto and no exact or prefix term: where it occurs is all the scan needs to tell.
    plain: bool = dc_field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plain", not self.exclude and not any(
            t.exact or t.prefix for t in (*self.terms, *self.context)))


@dataclass(frozen=True)
class Regex:
    pattern: str
    column: int
    field: str | None = None
    compiled: Any = dc_field(default=None, compare=False, repr=False)  # set by monitor.rules


@dataclass(frozen=True)
class Meta:
    """A condition on the item's metadata: its feed's name or tags, its link's host, its
    language."""

    field: str
    value: str
    column: int


@dataclass(frozen=True)
class Near:
    left: Node
    right: Node
    distance: int


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


Node = Match | EntityRef | Entity | Regex | Meta | Near | Not | And | Or


@dataclass(frozen=True)
class _Token:
    kind: str  # ( ) AND OR NOT - NEAR FIELD = PHRASE ENTITY REGEX WORD
    value: str
    column: int


def _tokens(query: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        col = i + 1
        if c.isspace():
            i += 1
        elif c in "()":
            out.append(_Token(c, c, col))
            i += 1
        elif c == '"':
            end = query.find('"', i + 1)
            if end == -1:
                raise QuerySyntaxError("unterminated phrase: a closing \" is missing", col)
            out.append(_Token("PHRASE", query[i + 1:end], col))
            i = end + 1
        elif c == "/":
            end = i + 1
            while end < n and query[end] != "/":
                end += 2 if query[end] == "\\" else 1
            if end >= n:
                raise QuerySyntaxError("unterminated regular expression: a closing / is "
                                       "missing", col)
            pattern = query[i + 1:end].replace("\\/", "/")
            if not pattern:
                raise QuerySyntaxError("empty regular expression", col)
            out.append(_Token("REGEX", pattern, col))
            i = end + 1
            if i < n and not query[i].isspace() and query[i] != ")":
                raise QuerySyntaxError("a regular expression ends at its closing /: for flags "
                                       "write them inside, as in /(?i)pattern/", i + 1)
        elif c in "-=" and i + 1 < n and not query[i + 1].isspace():
            out.append(_Token(c, c, col))
            i += 1
        elif (field := _FIELD.match(query, i)) is not None:
            out.append(_Token("FIELD", field.group(1), col))
            i = field.end()
            if i < n and query[i].isspace():
                raise QuerySyntaxError(f"nothing after {field.group(1)}:", i + 1)
        else:
            m = _WORD_END.search(query, i)
            end = m.start() if m else n
            word = query[i:end]
            if word in ("AND", "OR", "NOT"):
                out.append(_Token(word, word, col))
            elif word.startswith("NEAR/") and _NEAR.fullmatch(word) is None:
                raise QuerySyntaxError("NEAR/ needs a number of words, as in NEAR/5", col)
            elif (near := _NEAR.fullmatch(word)) is not None:
                distance = int(near.group(1)) if near.group(1) else DEFAULT_NEAR
                if not 1 <= distance <= MAX_NEAR:
                    raise QuerySyntaxError(f"NEAR distance must be 1 to {MAX_NEAR}", col)
                out.append(_Token("NEAR", str(distance), col))
            elif word.startswith("@"):
                em = _ENTITY.fullmatch(word)
                if not em:
                    raise QuerySyntaxError(
                        f"bad entity reference {word!r}: use @ and an entity id (letters, "
                        "digits, '-', '_')", col)
                out.append(_Token("ENTITY", em.group(1), col))
            else:
                out.append(_Token("WORD", word, col))
            i = end
    return out


class _Parser:
    def __init__(self, query: str):
        self.query = query
        self.tokens = _tokens(query)
        self.pos = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def end_column(self) -> int:
        return len(self.query) + 1

    def parse(self) -> Node:
        if not self.tokens:
            raise QuerySyntaxError("the query is empty", 1)
        node = self.parse_or()
        token = self.peek()
        if token is not None:
            if token.kind == ")":
                raise QuerySyntaxError("unbalanced ')': no '(' opens it", token.column)
            raise QuerySyntaxError(f"unexpected {token.value!r}", token.column)
        return node

    def parse_or(self) -> Node:
        children = [self.parse_and()]
        while (token := self.peek()) is not None and token.kind == "OR":
            self.take()
            children.append(self.parse_and())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def parse_and(self) -> Node:
        children = [self.parse_unary()]
        while (token := self.peek()) is not None and token.kind not in ("OR", ")"):
            if token.kind == "AND":
                self.take()
            children.append(self.parse_unary())
        return children[0] if len(children) == 1 else And(tuple(children))

    def parse_unary(self) -> Node:
        token = self.peek()
        if token is not None and token.kind in ("NOT", "-"):
            self.take()
            return Not(self.parse_unary())
        return self.parse_near()

    def parse_near(self) -> Node:
        left = self.parse_primary()
        while (token := self.peek()) is not None and token.kind == "NEAR":
            self.take()
            right = self.parse_primary()
            for side, column in ((left, token.column), (right, token.column)):
                if not _nearable(side):
                    raise QuerySyntaxError("NEAR joins words, phrases, entities or an OR of "
                                           "them", column)
            left = Near(left, right, int(token.value))
        return left

    def parse_primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise QuerySyntaxError("the query ends where a term was expected", self.end_column())
        if token.kind in ("AND", "OR", ")", "NEAR"):
            raise QuerySyntaxError(f"{token.value!r} where a term was expected", token.column)
        self.take()
        if token.kind == "(":
            if (inner := self.peek()) is not None and inner.kind == ")":
                raise QuerySyntaxError("empty parentheses", token.column)
            node = self.parse_or()
            closing = self.peek()
            if closing is None or closing.kind != ")":
                raise QuerySyntaxError("unbalanced '(': a closing ')' is missing", token.column)
            self.take()
            return node
        if token.kind == "FIELD":
            return self.parse_field(token)
        if token.kind == "=":
            value = self.peek()
            if value is None or value.kind not in ("WORD", "PHRASE"):
                raise QuerySyntaxError("= must be followed by a word or a \"phrase\"",
                                       token.column)
            self.take()
            return self.term(value, exact=True)
        if token.kind == "ENTITY":
            return EntityRef(token.value, token.column)
        if token.kind == "REGEX":
            return Regex(token.value, token.column)
        if token.kind in ("NOT", "-"):
            raise QuerySyntaxError("NOT where a term was expected", token.column)
        return self.term(token)

    def parse_field(self, token: _Token) -> Node:
        field = token.value
        if field in META_FIELDS:
            value = self.peek()
            if value is None or value.kind not in ("WORD", "PHRASE"):
                raise QuerySyntaxError(f"{field}: takes a word or a \"phrase\"", token.column)
            self.take()
            if not value.value.strip():
                raise QuerySyntaxError(f"{field}: needs a value", value.column)
            return Meta(field, value.value.strip(), token.column)
        inner = self.parse_primary()
        scoped = _scope(inner, field)
        if scoped is None:
            raise QuerySyntaxError(f"{field}: cannot scope a metadata condition",
                                   token.column)
        return scoped

    def term(self, token: _Token, *, exact: bool = False) -> Match:
        text = token.value
        prefix = token.kind == "WORD" and text.endswith("*")
        if prefix:
            text = text[:-1]
        if "*" in text:
            raise QuerySyntaxError("a * is only allowed at the end of a word", token.column)
        if prefix and exact:
            raise QuerySyntaxError("an exact term (=) cannot end with *", token.column)
        term = Term.parse(text, prefix=prefix, exact=exact)
        what = "phrase" if token.kind == "PHRASE" else "word"
        if term.empty:
            raise QuerySyntaxError(f"{what} {token.value!r} has no letters or digits",
                                   token.column)
        if exact and term.substring is None and len(term.written) != len(term.words):
            raise QuerySyntaxError(f"{token.value!r} cannot be matched exactly: it holds "
                                   "symbols that only stand for letters (write the letters)",
                                   token.column)
        if prefix and (term.substring is not None or len(term.words[-1]) < 2):
            raise QuerySyntaxError("a prefix needs at least two letters before the *, in a "
                                   "spaced script", token.column)
        return Match(term, token.column)


def _nearable(node: Node) -> bool:
    if isinstance(node, Match | EntityRef):
        return True
    if isinstance(node, Or):
        return all(_nearable(child) for child in node.children)
    return False


def _scope(node: Node, field: str) -> Node | None:
    """Push a text-field scope down to every term under `node`."""
    if isinstance(node, Match | EntityRef | Regex):
        return replace(node, field=field)
    if isinstance(node, Meta):
        return None
    if isinstance(node, Not):
        child = _scope(node.child, field)
        return None if child is None else Not(child)
    if isinstance(node, Near):
        left, right = _scope(node.left, field), _scope(node.right, field)
        return None if left is None or right is None else Near(left, right, node.distance)
    if isinstance(node, And | Or):
        children = [_scope(child, field) for child in node.children]
        if any(child is None for child in children):
            return None
        return type(node)(tuple(children))  # type: ignore[arg-type]
    return node


def parse(query: str) -> Node:
    """Parse a query string; raises QuerySyntaxError with a column on error."""
    return _Parser(query).parse()


def walk(node: Node):  # type: ignore[no-untyped-def]
    """Every node of the tree, depth first."""
    yield node
    if isinstance(node, Not):
        yield from walk(node.child)
    elif isinstance(node, Near):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, And | Or):
        for child in node.children:
            yield from walk(child)


def entity_refs(node: Node) -> list[EntityRef]:
    return [n for n in walk(node) if isinstance(n, EntityRef)]


def resolve(node: Node, entities: dict[str, Any]) -> Node:
    """Replace every @entity reference by the entity (all must be known); an entity may be
    given as an Entity or as a tuple of alias terms."""
    if isinstance(node, EntityRef):
        entity = entities[node.name]
        if not isinstance(entity, Entity):
            entity = Entity(node.name, tuple(entity))
        return replace(entity, field=node.field)
    if isinstance(node, Not):
        return Not(resolve(node.child, entities))
    if isinstance(node, Near):
        return Near(resolve(node.left, entities), resolve(node.right, entities), node.distance)
    if isinstance(node, And | Or):
        return type(node)(tuple(resolve(child, entities) for child in node.children))  # type: ignore[arg-type]
    return node
