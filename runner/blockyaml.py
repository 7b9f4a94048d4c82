"""A fast path for runner.write: the same bytes as its PyYAML Dumper, sooner.

PyYAML's pure-Python emitter walks an event per node through a state
machine; at a few microseconds an event, an Argo template for 1,000 stages
(1.8 MB) took 2 s to write, most of a compile (issue 13). libyaml's emitter
cannot indent sequences inside mappings, which the project's files do. This
writer walks the data directly, keeps the emitter's own state (column,
whitespace, indention, indent) by its rules, and asks PyYAML's representer,
resolver and scalar analysis what each scalar is, so each style decision is
PyYAML's. It covers what generated files hold: block mappings and sequences,
empty ones in flow style, and scalars written plain, single-quoted or as
literal blocks, on lines that fit the width. Anything else (a double-quoted
or folded scalar, a complex key, a wrapped line, a written tag, a type the
representer does not know) raises Unsupported, and runner.write renders the
whole document with PyYAML instead: the output is the same either way
(tests/test_write.py compares the two).
"""

from __future__ import annotations

import io
import re
from typing import Any

import yaml
from yaml.emitter import Emitter, ScalarAnalysis

_BREAKS = "\n\x85\u2028\u2029"
_STD = "tag:yaml.org,2002:"
_STR = _STD + "str"
_PLAIN, _SINGLE, _LITERAL = "", "'", "|"
# What analyze_scalar counts as special with allow_unicode: only a double
# quoted scalar may hold it.
_SPECIAL = re.compile(
    "[^\n\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010fffe]"
)
# Keys longer than this (with their tag) are complex keys (`? key`) to PyYAML.
_SIMPLE_KEY_LIMIT = 128


class Unsupported(Exception):
    """Data this writer leaves to PyYAML's emitter."""


class Writer:
    """One document's text, written as the given PyYAML dumper class would.

    dumper is a yaml.SafeDumper subclass whose only changes are sequences
    indented in mappings, no aliases, and a trailing `# comment` on scalar
    nodes that carry one (runner.write._Dumper).
    """

    def __init__(self, dumper: type[yaml.SafeDumper], width: int) -> None:
        self._dumper = dumper(io.StringIO(), allow_unicode=True, width=width)
        self._analyzer = Emitter(io.StringIO(), allow_unicode=True, width=width)
        self._width = self._analyzer.best_width
        self._step = self._analyzer.best_indent
        self._memo: dict[tuple[str, bool], tuple[str, str]] = {}
        self._out: list[str] = []
        self._column = 0
        self._whitespace = True
        self._indention = True
        self._indent: int | None = None

    def document(self, data: dict[str, Any]) -> str:
        self._node(data)
        self._indent = None
        self._write_indent()  # the document's end
        return "".join(self._out)

    # -- the emitter's state, by its rules (yaml.emitter.Emitter.write_*) --

    def _indicator(
        self, text: str, need_whitespace: bool, whitespace: bool = False
    ) -> None:
        if not self._whitespace and need_whitespace:
            text = " " + text
        self._whitespace = whitespace
        self._indention = False  # no caller here keeps it (only `-` does)
        self._column += len(text)
        self._out.append(text)

    def _write_indent(self) -> None:
        indent = self._indent or 0
        if (
            not self._indention
            or self._column > indent
            or (self._column == indent and not self._whitespace)
        ):
            self._line_break()
        if self._column < indent:
            self._whitespace = True
            self._out.append(" " * (indent - self._column))
            self._column = indent

    def _line_break(self) -> None:
        self._out.append("\n")
        self._whitespace = True
        self._indention = True
        self._column = 0

    def _deeper(self, flow: bool) -> int | None:
        """Enter a node; return the indent to restore after it."""
        was = self._indent
        if was is None:
            self._indent = self._step if flow else 0
        else:
            self._indent = was + self._step
        return was

    # -- nodes --

    def _node(self, data: Any, simple_key: bool = False) -> None:
        kind = type(data)
        if kind is dict:
            if simple_key:
                raise Unsupported("a mapping as a key")
            self._mapping(data)
        elif kind is list:
            if simple_key:
                raise Unsupported("a sequence as a key")
            self._sequence(data)
        else:
            self._scalar(data, simple_key)

    def _empty(self, start: str, end: str) -> None:
        self._indicator(start, True, whitespace=True)
        self._indicator(end, False)

    def _mapping(self, data: dict[Any, Any]) -> None:
        if not data:
            self._empty("{", "}")
            return
        was = self._deeper(flow=False)
        for key, value in data.items():
            self._write_indent()
            self._node(key, simple_key=True)
            self._indicator(":", False)
            self._node(value)
        self._indent = was

    def _sequence(self, data: list[Any]) -> None:
        if not data:
            self._empty("[", "]")
            return
        was = self._deeper(flow=False)
        for item in data:
            self._write_indent()
            # `-` is the one indicator that keeps the indention flag.
            indention = self._indention
            self._indicator("-", True)
            self._indention = indention
            self._node(item)
        self._indent = was

    # -- scalars --

    def _scalar(self, data: Any, simple_key: bool) -> None:
        if type(data) is str:
            memo = self._memo.get((data, simple_key))
            if memo is None:
                memo = self._memo[data, simple_key] = self._style(
                    self._dumper.represent_data(data), simple_key
                )
            style, text = memo
            comment = None
        else:
            node = self._dumper.represent_data(data)
            if not isinstance(node, yaml.ScalarNode):
                raise Unsupported(f"a {type(data).__name__} value")
            style, text = self._style(node, simple_key)
            comment = getattr(node, "comment", None)
        was = self._deeper(flow=True)
        if style == _LITERAL:
            self._literal(text)
        elif text:  # an empty plain scalar writes nothing at all
            if not self._whitespace:
                text = " " + text
            if not simple_key and self._column + len(text) > self._width:
                raise Unsupported("a line PyYAML would wrap")
            self._whitespace = False
            self._indention = False
            self._column += len(text)
            self._out.append(text)
        if comment:
            if simple_key:
                raise ValueError(f"a mapping key cannot carry a comment: {comment!r}")
            self._indicator(f"# {comment}", True)
        self._indent = was

    def _style(self, node: yaml.ScalarNode, simple_key: bool) -> tuple[str, str]:
        """(style, text) as yaml.emitter.Emitter.choose_scalar_style decides."""
        value, tag, hint = node.value, node.tag, node.style
        if hint == _LITERAL and tag == _STR and not simple_key:
            # A script: a literal block unless analyze_scalar would forbid
            # one (a trailing space, a space before a line break, a special
            # character), decided without its walk over every character.
            if value.endswith(" ") or " \n" in value or _SPECIAL.search(value):
                raise Unsupported("a multi-line scalar PyYAML would double-quote")
            return _LITERAL, value
        if not tag.startswith(_STD):
            raise Unsupported(f"the tag {tag}")
        detected = self._dumper.resolve(yaml.ScalarNode, value, (True, False))
        implicit = (tag == detected, tag == _STR)
        analysis: ScalarAnalysis = self._analyzer.analyze_scalar(value)
        if simple_key and not (
            len("!!") + len(tag) - len(_STD) + len(value) < _SIMPLE_KEY_LIMIT
            and not analysis.empty
            and not analysis.multiline
        ):
            raise Unsupported("a complex key")
        style = self._choose(hint, implicit[0], analysis, simple_key)
        if not ((style == _PLAIN and implicit[0]) or (style != _PLAIN and implicit[1])):
            raise Unsupported("a scalar whose tag PyYAML would write")
        if style == _SINGLE:
            if analysis.multiline:
                raise Unsupported("a single-quoted scalar over lines")
            return style, "'" + value.replace("'", "''") + "'"
        if style == _LITERAL:
            return style, value
        if style != _PLAIN:
            raise Unsupported(f"the scalar style {style!r}")
        return style, value

    @staticmethod
    def _choose(
        hint: str | None, implicit: bool, analysis: ScalarAnalysis, simple_key: bool
    ) -> str:
        if hint == '"':
            return '"'
        if (
            not hint
            and implicit
            and not (simple_key and (analysis.empty or analysis.multiline))
            and analysis.allow_block_plain
        ):
            return _PLAIN
        if hint and hint in "|>":
            return hint if not simple_key and analysis.allow_block else '"'
        if analysis.allow_single_quoted and not (simple_key and analysis.multiline):
            return _SINGLE
        return '"'

    def _literal(self, text: str) -> None:
        hints = self._analyzer.determine_block_hints(text)
        if "+" in hints or any(b in text for b in _BREAKS[1:]):
            raise Unsupported("a literal block PyYAML would end or break otherwise")
        self._indicator("|" + hints, True)
        self._line_break()
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the text's last line break ends the block
        for line in lines:
            if line:
                self._write_indent()
                # PyYAML does not count a literal line's width either.
                self._out.append(line)
            self._line_break()
