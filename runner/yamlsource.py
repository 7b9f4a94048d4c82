"""Read YAML safely while keeping the line and column of every key and value.

PyYAML's composer gives us nodes with positions; we build the Python values
ourselves so that we can refuse what a spec never needs and an attacker would
use: duplicate keys, language-specific tags, alias expansion bombs, deep
nesting and huge files. Bytes are checked before YAML sees them: a spec is
UTF-8 text (a UTF-8 byte-order mark is accepted) without control characters,
and every bad byte is reported at its line, column and key.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml._yaml import CParser
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from runner.errors import Path, Problem, SpecError

MAX_BYTES = 1_000_000
# Aliases may be used for reuse, but expanding them must stay proportional to
# the document: a "billion laughs" file is small and expands exponentially.
MAX_NODES = 100_000
# Far deeper than any spec needs; PyYAML's composer recurses per level and
# would hit Python's recursion limit long before MAX_BYTES does.
MAX_DEPTH = 32
# What YAML 1.1 (PyYAML's reader) accepts: tab, line breaks and printable text.
NOT_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes surrogateescape could not decode
LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
OTHER_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}
MAX_REPORTED = 20  # bad bytes reported one by one, then a count
_STD = "tag:yaml.org,2002:"
SCALAR_TAGS = {_STD + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
MERGE_TAG = _STD + "merge"
_LIBYAML_DIFFERS = re.compile(r"[\t\ufeff]|[|>][-+0-9]*#")


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
            if key is None:  # `null:` or `~:`: named as YAML spells it
                key = "null"
            elif not isinstance(key, str | int | float | bool):
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


class _Refused(Exception):
    """Composing stopped: the document is too deep or too large."""

    def __init__(self, mark: yaml.Mark, message: str) -> None:
        self.mark = mark
        self.message = message


class _Limits:
    """Refuse, while composing, nesting deeper than MAX_DEPTH and more than
    MAX_NODES nodes (PyYAML's composer is pure Python: a megabyte of small
    values would take seconds)."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    self.peek_event().start_mark,  # type: ignore[attr-defined]
                    f"nested more than {MAX_DEPTH} levels deep",
                )
            if self._nodes > MAX_NODES:
                raise _Refused(
                    self.peek_event().start_mark,  # type: ignore[attr-defined]
                    f"the document holds more than {MAX_NODES:,} values",
                )
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1


class _Loader(_Limits, yaml.SafeLoader):
    """The safe loader, pure Python: the reference for every error message."""


class _FastLoader(_Limits, Composer, CParser, SafeConstructor, Resolver):  # type: ignore[misc]
    """libyaml's scanner and parser (C) under PyYAML's own composer: the
    same nodes, tags and positions as _Loader, ten times sooner; a spec of
    1,000 stages took a second to scan in Python (issue 13)."""

    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        node: yaml.ScalarNode = super().compose_scalar_node(anchor)
        if node.value == "" and not node.style:
            # A value left out (`key:`): libyaml places it elsewhere than
            # PyYAML in some spellings, and errors name its position.
            raise _Refused(node.start_mark, "an empty value")
        return node


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character, counting line breaks as YAML does."""
    line, start = 1, 0
    for m in LINE_BREAK.finditer(text, 0, index):
        line, start = line + 1, m.end()
    return line, index - start + 1


def too_big(filename: str, size: int) -> SpecError:
    """The error for a file of `size` bytes, over MAX_BYTES."""
    return SpecError(
        filename,
        [
            Problem(
                1,
                1,
                (),
                f"the file is {size:,} bytes; a spec may be at most "
                f"{MAX_BYTES:,} bytes",
            )
        ],
    )


def _compose(text: str, filename: str) -> yaml.Node | None:
    # Refused or unreadable: the pure-Python loader finds the problem again
    # and words it, at its own position, as it always has.
    # libyaml reads some texts PyYAML refuses, a tab (`a<TAB>`) or a comment
    # right after a block indicator (`|#`), and a byte-order mark inside the
    # text otherwise: those go to PyYAML alone (tests/test_scaling.py).
    if not _LIBYAML_DIFFERS.search(text):
        with contextlib.suppress(yaml.YAMLError, _Refused, UnicodeError):
            return yaml.compose(text, Loader=_FastLoader)  # type: ignore[no-any-return]
    return _compose_with(text, filename, _Loader)


def _compose_with(text: str, filename: str, loader: type) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=loader)  # type: ignore[no-any-return]
    except _Refused as exc:
        raise SpecError(
            filename,
            [Problem(exc.mark.line + 1, exc.mark.column + 1, (), exc.message)],
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        context = exc.context or ""
        if exc.context_mark is not None and exc.problem_mark is not None:
            start = exc.context_mark
            context += f" (from line {start.line + 1}, column {start.column + 1})"
        what = ", ".join(p for p in (context, exc.problem or "") if p)
        raise SpecError(
            filename,
            [Problem(line, col, _syntax_key(text, exc), f"invalid YAML: {what}")],
        ) from exc
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        raise SpecError(
            filename, [Problem(line, col, (), f"invalid YAML: {exc.reason}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError(filename, [Problem(1, 1, (), f"invalid YAML: {exc}")]) from exc


def _escaped(text: str) -> str:
    """Text safe to print on a terminal: bad characters as escapes."""

    def escape(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"  # noqa: PLR2004

    return NOT_PRINTABLE.sub(escape, text)


def _composed(text: str) -> yaml.Node | None:
    """The node tree of text, or None when YAML cannot read it."""
    try:
        return yaml.compose(text, Loader=_Loader)  # type: ignore[no-any-return]
    except (yaml.YAMLError, _Refused):
        return None


def _key_at(text: str, index: int) -> Path:
    """The key path of the innermost node holding a character, as best known.
    A text YAML cannot read gives the empty path."""
    return _key_in(_composed(text), index, text)


def _key_in(node: yaml.Node | None, index: int, original: str) -> Path:
    """The key path of the innermost node of a tree holding a character; keys
    are named as `original` (the file as it is) spells them."""
    path: Path = ()
    while isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        items: list[tuple[str | int, yaml.Node, yaml.Node]] = (
            [
                (_escaped(original[k.start_mark.index : k.end_mark.index]), k, v)
                for k, v in node.value
            ]
            if isinstance(node, yaml.MappingNode)
            else [(i, v, v) for i, v in enumerate(node.value)]
        )
        inner = next(
            (
                (part, last)
                for part, first, last in items
                if first.start_mark.index <= index <= last.end_mark.index
            ),
            None,
        )
        if inner is None:
            break
        path, node = (*path, inner[0]), inner[1]
    return path


def _syntax_key(text: str, exc: yaml.MarkedYAMLError) -> Path:
    """Where a syntax error is, as a key path: the key whose value it breaks."""
    for mark in (exc.context_mark, exc.problem_mark):
        if mark is not None:
            prefix = text[: mark.index].rstrip(" \t")
            found = _key_at(prefix, len(prefix))
            if found:
                return found
    return ()


def _bad_characters(
    text: str, bad: list[tuple[int, str]], more: tuple[int, int], filename: str
) -> SpecError:
    """One problem per bad character (index, description), each with its key,
    then how many more there are. The file is composed once for all of them."""
    clean = NOT_PRINTABLE.sub("x", text.replace("\ufffd", "x"))
    tree = _composed(clean)
    problems = []
    for index, what in bad:
        line, col = _line_col(text, index)
        problems.append(Problem(line, col, _key_in(tree, index, text), what))
    count, at = more
    if count:
        line, col = _line_col(text, at)
        problems.append(Problem(line, col, (), f"and {count} more like these"))
    return SpecError(filename, problems)


def _first(
    found: Iterator[re.Match[str]], describe: Callable[[str], str]
) -> tuple[list[tuple[int, str]], int, int]:
    """The first MAX_REPORTED matches as (index, description), how many more
    there are and where the next one is: a file of a million bad bytes costs
    one pass."""
    shown = [
        (m.start(), describe(m.group())) for m in itertools.islice(found, MAX_REPORTED)
    ]
    following = next(found, None)
    if following is None:
        return shown, 0, 0
    return shown, 1 + sum(1 for _ in found), following.start()


def decode(data: bytes, filename: str) -> str:
    """The text of a spec file, or SpecError naming every byte that is not UTF-8."""
    if len(data) > MAX_BYTES:
        raise too_big(filename, len(data))
    for bom, encoding in OTHER_BOMS.items():
        if data.startswith(bom):
            raise SpecError(
                filename,
                [
                    Problem(
                        1,
                        1,
                        (),
                        f"the file is {encoding} text (it starts with a byte-order "
                        "mark); save it as UTF-8",
                    )
                ],
            )
    data = data.removeprefix(codecs.BOM_UTF8)
    # One pass: each byte that is not UTF-8 becomes a lone surrogate, which
    # valid UTF-8 cannot hold, so they are exactly the bad bytes.
    escaped = data.decode("utf-8", "surrogateescape")
    bad, count, at = _first(
        NOT_UTF8.finditer(escaped),
        lambda c: (
            f"byte 0x{ord(c) - 0xDC00:02x} is not UTF-8 text; save the file as UTF-8"
        ),
    )
    if bad:
        text = NOT_UTF8.sub("\ufffd", escaped)
        raise _bad_characters(text, bad, (count, at), filename)
    return escaped


def load_bytes(data: bytes, filename: str) -> Document:
    """Decode and parse a spec file's bytes (see `decode` and `load`)."""
    return load(decode(data, filename), filename)


def load(text: str, filename: str) -> Document:
    """Parse one YAML document, or raise SpecError with every problem found."""
    doc = Document(filename, None)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise too_big(filename, size)
    bad, count, at = _first(
        NOT_PRINTABLE.finditer(text),
        lambda c: (
            f"the character U+{ord(c):04X} is not allowed in YAML"
            + (" (a NUL byte: is this a binary file?)" if c == "\0" else "")
        ),
    )
    if bad:
        raise _bad_characters(text, bad, (count, at), filename)
    node = _compose(text, filename)
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


def _value_at(data: Any, key: Path) -> Any:
    for part in key:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            raise KeyError(key)
    return data


def locate(filename: str, key: Path, value: Any) -> str:
    """``file:line:col: a -> b``, to start an error raised away from the spec.

    For a stage, which reads the compiled params.yaml, or a run that failed
    in DVC: the file is read again. It gives the key's line only while the
    file still sets ``key`` to ``value`` (another spec may have been compiled
    with ``--file``); otherwise the key alone.
    """
    where = " -> ".join(map(str, key))
    try:
        with open(filename, "rb") as f:
            doc = load_bytes(f.read(MAX_BYTES + 1), filename)
        found = _value_at(doc.data, key)
    except (OSError, SpecError, KeyError):
        return where
    if found != value or key not in doc.keys:
        return where
    pos = doc.keys[key]
    return f"{filename}:{pos.line}:{pos.col}: {where}"
