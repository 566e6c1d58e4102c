"""YAML for hand-edited rule files: line numbers kept, duplicate keys refused, YAML 1.2 booleans.

PyYAML follows YAML 1.1, where `NO`, `on` and `y` are booleans: an alias list holding `NO`
(Norway) would silently turn into `False`. Here only `true`/`false` are booleans. A mapping
that repeats a key is an error, not "last one wins". Mappings and lists come back as
`YamlMap`/`YamlList`, which remember where each value starts, so validation errors can point at
`file:line:column`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based
    plain: bool  # the value is a plain or quoted single-line scalar: columns inside it are exact
    quoted: bool
    style: str | None = None  # ">" or "|" for block scalars
    end_line: int = 0


class YamlMap(dict):
    """A dict that knows where each key's value starts."""

    marks: dict[Any, Mark]
    mark: Mark


class YamlList(list):
    marks: list[Mark]
    mark: Mark


class YamlError(ValueError):
    def __init__(self, message: str, line: int, column: int):
        self.message = message
        self.line = line
        self.column = column
        super().__init__(f"{line}:{column}: {message}")


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.2 core schema booleans only.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))


def _mark(node: Node) -> Mark:
    single_line = node.start_mark.line == node.end_mark.line
    style = getattr(node, "style", None)
    return Mark(line=node.start_mark.line + 1, column=node.start_mark.column + 1,
                plain=isinstance(node, ScalarNode) and single_line and style in (None, "'", '"'),
                quoted=style in ("'", '"'), style=style, end_line=node.end_mark.line + 1)


def _build(loader: _Loader, node: Node) -> Any:
    if isinstance(node, MappingNode):
        loader.flatten_mapping(node)
        result = YamlMap()
        result.marks = {}
        result.mark = _mark(node)
        key_lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = _build(loader, key_node)
            try:
                hash(key)
            except TypeError:
                raise YamlError("a mapping key must be a plain value",
                                key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in result:
                raise YamlError(
                    f"duplicate key {key!r} (first at line {key_lines[key]})",
                    key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            key_lines[key] = key_node.start_mark.line + 1
            result[key] = _build(loader, value_node)
            result.marks[key] = _mark(value_node)
        return result
    if isinstance(node, SequenceNode):
        items = YamlList(_build(loader, child) for child in node.value)
        items.marks = [_mark(child) for child in node.value]
        items.mark = _mark(node)
        return items
    return loader.construct_object(node, deep=True)


def load(text: str) -> Any:
    """Parse one YAML document; raises YamlError with a line and column."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _build(loader, node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or str(exc)
        if isinstance(exc, ConstructorError) and exc.context:
            reason = f"{exc.context}: {reason}"
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlError(f"invalid YAML: {reason}", line, column) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {exc}", 1, 1) from None
    finally:
        loader.dispose()


def mark_of(data: Any, loc: tuple[Any, ...]) -> Mark | None:
    """The mark of the value at `loc` (a pydantic error location), or of its nearest parent."""
    best: Mark | None = getattr(data, "mark", None)
    node = data
    for key in loc:
        if isinstance(node, YamlMap) and key in node:
            best = node.marks[key]
            node = node[key]
        elif isinstance(node, YamlList) and isinstance(key, int) and 0 <= key < len(node):
            best = node.marks[key]
            node = node[key]
        else:
            break
    return best
