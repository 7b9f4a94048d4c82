"""Read YAML safely while keeping the line and column of every key and value.

PyYAML's composer gives us nodes with positions; we build the Python values
ourselves so that we can refuse what a spec never needs and an attacker would
use: duplicate keys, language-specific tags, alias expansion bombs and huge
files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from runner.errors import Path, Problem, SpecError

MAX_BYTES = 1_000_000
# Aliases may be used for reuse, but expanding them must stay proportional to
# the document: a "billion laughs" file is small and expands exponentially.
MAX_NODES = 100_000
_STD = "tag:yaml.org,2002:"
SCALAR_TAGS = {_STD + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
MERGE_TAG = _STD + "merge"


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    col: int  # 1-based


@dataclass
class Document:
    """A parsed YAML file: the plain data and where each path came from."""

    filename: str
    data: Any
    keys: dict[Path, Position] = field(default_factory=dict)
    values: dict[Path, Position] = field(default_factory=dict)

    def where(self, path: Path) -> Position:
        """Best position for a path: the key itself, else its nearest parent."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return Position(1, 1)

    def value_at(self, path: Path) -> Position:
        return self.values.get(path) or self.where(path)

    def problem(self, path: Path, message: str, *, at_value: bool = False) -> Problem:
        pos = self.value_at(path) if at_value else self.where(path)
        return Problem(pos.line, pos.col, path, message)


def _pos(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []
        self.visited = 0
        self._scalars = yaml.SafeLoader("")  # only its scalar constructors are used

    def fail(self, node: yaml.Node, path: Path, message: str) -> None:
        pos = _pos(node)
        self.problems.append(Problem(pos.line, pos.col, path, message))

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES:
            raise _TooBig(node)
        self.doc.values.setdefault(path, _pos(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _STD + "seq":
                self.fail(node, path, f"the tag {node.tag!r} is not allowed")
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if node.tag not in SCALAR_TAGS:
            self.fail(node, path, f"the tag {node.tag!r} is not allowed")
            return None
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.fail(node, path, f"cannot read this value: {exc}")
            return None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        if node.tag != _STD + "map":
            self.fail(node, path, f"the tag {node.tag!r} is not allowed")
        result: dict[Any, Any] = {}
        own: set[Any] = set()
        merged: list[yaml.MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                merged.extend(self._merge_sources(value_node, path))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, path, "keys must be plain scalars")
                continue
            key = self.build(key_node, (*path, "<key>"))
            if not isinstance(key, str | int | float | bool):
                key = str(key)
            if key in own:
                self.fail(key_node, (*path, key), "duplicate key")
                continue
            own.add(key)
            self.doc.keys[(*path, key)] = _pos(key_node)
            result[key] = self.build(value_node, (*path, key))
        for source in merged:
            for key, value in self._mapping(source, path).items():
                result.setdefault(key, value)
        return result

    def _merge_sources(self, node: yaml.Node, path: Path) -> list[yaml.MappingNode]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(n, yaml.MappingNode) for n in node.value
        ):
            return list(node.value)
        self.fail(node, path, "a merge key (<<) takes a mapping or a list of mappings")
        return []


class _TooBig(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def load(text: str, filename: str) -> Document:
    """Parse one YAML document, or raise SpecError with every problem found."""
    doc = Document(filename, None)
    if len(text.encode()) > MAX_BYTES:
        raise SpecError(
            filename,
            [Problem(1, 1, (), f"the file is larger than {MAX_BYTES:,} bytes")],
        )
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SpecError(
            filename, [Problem(line, col, (), f"invalid YAML: {what}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError(filename, [Problem(1, 1, (), f"invalid YAML: {exc}")]) from exc
    if node is None:
        raise SpecError(filename, [Problem(1, 1, (), "the file is empty")])
    builder = _Builder(doc)
    try:
        doc.data = builder.build(node, ())
    except _TooBig as exc:
        pos = _pos(exc.node)
        raise SpecError(
            filename,
            [
                Problem(
                    pos.line,
                    pos.col,
                    (),
                    f"the document expands to more than {MAX_NODES:,} values "
                    "(aliases repeated too often)",
                )
            ],
        ) from None
    if builder.problems:
        raise SpecError(filename, builder.problems)
    return doc
