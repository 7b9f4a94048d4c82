"""The spec reference, docs/spec-reference.md, generated from the JSON Schema.

`python -m runner.specdoc` (or `make docs`) rewrites the page; `--check` writes
nothing and exits 1 when the committed page differs from the schema's. The page
lists every key of `mlops.yaml` in the schema's own order with its type,
required-ness, default, allowed values and description, so it cannot drift
from the schema: a keyword this walker does not know is an error, not a key
left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.framework import SCHEMA, SOURCE_ROOT
from runner.schema import SCHEMA_PATH
from runner.write import write_atomic

ROOT = SOURCE_ROOT
OUTPUT = ROOT / "docs" / "spec-reference.md"
COMMAND = "make docs"  # what the page and a failing check tell people to run
HEADER = (
    "<!-- Generated from schema/mlops.schema.json by `python -m runner.specdoc` "
    f"(`{COMMAND}`). Do not edit: change the schema and run it again. -->\n"
)
COLUMNS = ("key", "type", "required", "default", "allowed", "description")
# How a key you choose is written in a path, by the map it is a key of.
PLACEHOLDERS = {
    "data": "<source>",
    "pipeline": "<stage>",
    "columns": "<column>",
    "features": "<column>",
    "secrets": "<VAR>",
    "space": "<param>",
    "node_selector": "<label>",
}
# Keywords that only annotate or that the walker reads where they occur.
KNOWN = frozenset(
    {
        "$ref", "$schema", "$id", "$defs", "title", "description", "type",
        "properties", "additionalProperties", "required", "items", "enum",
        "const", "default", "pattern", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems",
        "uniqueItems", "minProperties", "propertyNames", "examples", "format",
        "not", "oneOf", "anyOf", "allOf",
    }
)  # fmt: skip


class SchemaShapeError(ValueError):
    """The schema uses a construct the reference cannot describe yet."""


@dataclass
class Section:
    """One heading of the page: an intro, a table of keys, notes under it."""

    title: str
    intro: str = ""
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"`{text}`"


def _cell(text: str) -> str:
    # GitHub ends a cell at every unescaped pipe, even inside a code span.
    return " ".join(text.split()).replace("|", "\\|")


class Walker:
    """Walks the schema in document order and collects the page's sections."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.sections: list[Section] = []

    def resolve(self, node: Any, path: str) -> Any:
        """The node with its `$ref` followed; keys beside the `$ref` win."""
        if not isinstance(node, dict):
            return node
        unknown = sorted(set(node) - KNOWN)
        if unknown:
            raise SchemaShapeError(f"{path or '(top)'}: unknown keyword {unknown[0]!r}")
        ref = node.get("$ref")
        if ref is None:
            return node
        if not ref.startswith("#/$defs/"):
            raise SchemaShapeError(f"{path}: only #/$defs/ references: {ref!r}")
        target = self.resolve(self.schema["$defs"][ref.removeprefix("#/$defs/")], path)
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}

    # --- one node, one row -------------------------------------------------

    def type_of(self, node: dict[str, Any], path: str) -> str:
        """`string`, `array of string`, `map of object`, `integer or string`."""
        kinds = node.get("type")
        alts = [self.resolve(a, path) for a in _alternatives(node)]
        if "const" in node:
            found = [_json_type(node["const"])]
        elif "enum" in node and kinds is None:
            found = [_json_type(v) for v in node["enum"]]
        elif kinds is None and alts and all("required" not in a for a in alts):
            found = [self.type_of(a, path) for a in alts]
        else:
            found = [kinds] if isinstance(kinds, str) else list(kinds or ["any"])
        if found == ["array"] and isinstance(node.get("items"), dict):
            found = [
                f"array of {self.type_of(self.resolve(node['items'], path), path)}"
            ]
        extra = node.get("additionalProperties")
        if found == ["object"] and "properties" not in node and isinstance(extra, dict):
            found = [f"map of {self.type_of(self.resolve(extra, path), path)}"]
        return " or ".join(dict.fromkeys(found))

    def allowed(self, node: dict[str, Any], path: str) -> str:
        """Every constraint on the value, in words and code."""
        out = _bounds(node)
        if "not" in node:
            banned = node["not"]
            if set(banned) != {"const"}:
                raise SchemaShapeError(
                    f"{path}: `not` is only read as `not: {{const}}`"
                )
            out.append(f"not {_code(banned['const'])}")
        if "propertyNames" in node:
            names = self.allowed(self.resolve(node["propertyNames"], path), path)
            out.append(f"keys: {names}")
        items = node.get("items")
        if isinstance(items, dict):
            item = self.resolve(items, path)
            if not self.has_children(item) and (inner := self.allowed(item, path)):
                out.append(f"items: {inner}")
        alts = [self.resolve(a, path) for a in _alternatives(node)]
        if alts and all("required" not in a for a in alts):
            shapes = [self.allowed(a, path) or self.type_of(a, path) for a in alts]
            out.append("either " + "; or ".join(shapes))
        return "; ".join(out)

    def row(self, path: str, node: dict[str, Any], required: str) -> tuple[str, ...]:
        """The table row of one key."""
        description = node.get("description", "")
        items = node.get("items")
        if isinstance(items, dict):
            item = self.resolve(items, path)
            if not self.has_children(item) and item.get("description"):
                description = f"{description} Each item: {item['description']}"
        if "examples" in node:
            shown = ", ".join(_code(e) for e in node["examples"])
            description = f"{description} Example: {shown}"
        default = _code(node["default"]) if "default" in node else ""
        cells = (
            _code(path),
            self.type_of(node, path),
            required,
            default,
            self.allowed(node, path),
            description,
        )
        return tuple(_cell(c) for c in cells)

    # --- a node and everything under it ------------------------------------

    def walk(self, path: str, raw: Any, section: Section, required: str) -> None:
        """Add the rows of a key and of every key under it to `section`."""
        node = self.resolve(raw, path)
        if node is False:
            return
        section.rows.append(self.row(path, node, required))
        self.children(path, node, section)

    def children(self, path: str, node: dict[str, Any], section: Section) -> None:
        """The keys under a node: its properties, a map's entries, a list's items."""
        needed = set(node.get("required", ()))
        for key, child in node.get("properties", {}).items():
            self.walk(f"{path}.{key}", child, section, "yes" if key in needed else "no")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            entry = self.resolve(extra, path)
            name = PLACEHOLDERS.get(path.rsplit(".", 1)[-1], "<key>")
            shown = entry.get("description") or self.allowed(entry, path)
            if shown or self.has_children(entry):
                self.walk(f"{path}.{name}", entry, section, "no")
        items = node.get("items")
        if isinstance(items, dict) and self.has_children(items):
            self.walk(f"{path}[]", items, section, "no")
        self.combinations(path, node, section)

    def has_children(self, raw: Any) -> bool:
        """Whether a node has keys of its own to list under it."""
        node = self.resolve(raw, "")
        if not isinstance(node, dict):
            return False
        extra = node.get("additionalProperties")
        items = node.get("items")
        return bool(
            node.get("properties")
            or node.get("allOf")
            or (isinstance(extra, dict) and self.has_children(extra))
            or (isinstance(items, dict) and self.has_children(items))
        )

    def combinations(self, path: str, node: dict[str, Any], section: Section) -> None:
        """`oneOf`/`anyOf` on which keys to give, and `allOf` of `if`/`then`."""
        for word, alts in (
            ("exactly one", node.get("oneOf")),
            ("at least one", node.get("anyOf")),
        ):
            if alts and all("required" in a for a in alts):
                names = "; ".join(a.get("title") or _keys(a["required"]) for a in alts)
                section.notes.append(f"{_code(path)} takes {word} of: {names}.")
        for part in node.get("allOf", ()):
            if set(part) - {"if", "then"} or "else" in part:
                raise SchemaShapeError(f"{path}: `allOf` is only read as if/then")
            when = _condition(part["if"])
            then = part["then"]
            needed = set(then.get("required", ()))
            banned = [k for k, v in then.get("properties", {}).items() if v is False]
            if banned:
                section.notes.append(f"{_code(path)} {when} takes no {_keys(banned)}.")
            for key, child in then.get("properties", {}).items():
                if child is False:
                    continue
                sub = Section(title=f"`{path}.{key}` {when}")
                resolved = self.resolve(child, path)
                sub.intro = resolved.get("description", "")
                self.walk(f"{path}.{key}", child, sub, "yes" if key in needed else "no")
                self.sections.append(sub)
                link = f"[its keys](#{_slug(sub.title)})"
                section.notes.append(f"{_code(f'{path}.{key}')} {when}: {link}.")

    def page(self) -> str:
        """The whole Markdown page."""
        top = self.schema
        needed = set(top.get("required", ()))
        head = Section(title="Top level", intro=top.get("description", ""))
        rest: list[Section] = []
        for key, raw in top["properties"].items():
            node = self.resolve(raw, key)
            cells = self.row(key, node, "yes" if key in needed else "no")
            if self.has_children(node):
                section = Section(title=f"`{key}`", intro=node.get("description", ""))
                cells = (f"[{cells[0]}](#{_slug(section.title)})", *cells[1:])
                before = len(self.sections)
                self.children(key, node, section)
                rest += [section, *self.sections[before:]]
                del self.sections[before:]
            head.rows.append(cells)
        lines = [
            HEADER,
            "# `mlops.yaml` reference\n",
            "Every key of the spec, in the order of `schema/mlops.schema.json`, the "
            "single definition of the file. In a key path, `<stage>` (or `<source>`, "
            "`<column>`, ...) stands for a name you choose and `[]` for each item of "
            "a list. *required* is relative to the key above it.\n",
        ]
        for section in [head, *rest]:
            lines.append(_render(section))
        return "\n".join(lines)


def _render(section: Section) -> str:
    out = [f"## {section.title}\n"]
    if section.intro:
        out.append(f"{section.intro}\n")
    out.append("| " + " | ".join(COLUMNS) + " |")
    out.append("| " + " | ".join("---" for _ in COLUMNS) + " |")
    out += ["| " + " | ".join(r) + " |" for r in section.rows]
    out.append("")
    out += [f"- {n}" for n in section.notes]
    if section.notes:
        out.append("")
    return "\n".join(out)


def _bounds(node: dict[str, Any]) -> list[str]:
    """The constraints a node states by itself: values, patterns, sizes."""
    out = []
    if "const" in node:
        out.append(f"only {_code(node['const'])}")
    if "enum" in node:
        out.append(", ".join(_code(v) for v in node["enum"]))
    if "pattern" in node:
        # A title beside a pattern says in words what the pattern stands for.
        named = f" ({node['title']})" if "title" in node else ""
        out.append(f"matches {_code(node['pattern'])}{named}")
    if "format" in node:
        out.append(f"format {node['format']}")
    words = (
        ("minimum", "≥ {}"), ("exclusiveMinimum", "> {}"),
        ("maximum", "≤ {}"), ("exclusiveMaximum", "< {}"),
        ("minLength", "at least {} characters"), ("maxLength", "at most {} characters"),
        ("minItems", "at least {} items"), ("maxItems", "at most {} items"),
        ("minProperties", "at least {} entries"),
    )  # fmt: skip
    for key, text in words:
        if key in node:
            out.append(text.format(node[key]))
    if node.get("uniqueItems"):
        out.append("no item twice")
    # "at least 1 characters" reads badly; one is the common case.
    singular = {
        "at least 1 characters": "not empty",
        "at least 1 items": "at least one item",
        "at least 1 entries": "at least one entry",
    }
    return [singular.get(o, o) for o in out]


def _slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, no punctuation, dashes."""
    kept = (c for c in title.lower() if c.isalnum() or c in "_- ")
    return "".join(kept).replace(" ", "-")


def _json_type(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return kinds.get(type(value), "null" if value is None else type(value).__name__)


def _alternatives(node: dict[str, Any]) -> list[Any]:
    return list(node.get("oneOf", ())) + list(node.get("anyOf", ()))


def _keys(names: list[str]) -> str:
    return ", ".join(_code(n) for n in names)


def _condition(cond: dict[str, Any]) -> str:
    """`with uses: train` from `{required: [uses], properties: {uses: {const}}}`."""
    if set(cond) - {"required", "properties"}:
        raise SchemaShapeError(f"an `if` the reference cannot read: {cond}")
    parts = []
    consts = cond.get("properties", {})
    for key in cond.get("required", ()):
        value = consts.get(key, {})
        if set(value) - {"const"}:
            raise SchemaShapeError(f"an `if` on {key!r} other than `const`: {value}")
        parts.append(f"`{key}: {value['const']}`" if "const" in value else f"`{key}`")
    return "with " + " and ".join(parts)


def render(schema_path: Path = SCHEMA_PATH) -> str:
    """The page for a schema file: the same schema always gives the same bytes."""
    with schema_path.open(encoding="utf-8") as f:
        schema = json.load(f)
    return Walker(schema).page()


def main(argv: list[str] | None = None) -> int:
    """`python -m runner.specdoc [--check]`."""
    parser = argparse.ArgumentParser(prog="python -m runner.specdoc")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if stale"
    )
    args = parser.parse_args(argv)
    if not (ROOT / SCHEMA).is_file():
        # Installed from a wheel: there is no docs/ to keep in step.
        sys.stderr.write(f"{ROOT} is not a checkout of the framework (no {SCHEMA})\n")
        return 2
    text = render()
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else None
    rel = OUTPUT.relative_to(ROOT)
    if args.check:
        if current != text:
            sys.stderr.write(f"{rel} is stale: run `{COMMAND}`\n")
            return 1
        return 0
    if current != text:
        write_atomic(OUTPUT, text)
        sys.stdout.write(f"wrote {rel}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
