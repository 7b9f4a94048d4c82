"""The one writer of generated files: deterministic YAML, atomic writes, --check."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from runner import blockyaml

HEADER = "# Generated from mlops.yaml by mlops compile. Do not edit.\n"
# Lines are never folded: a long command stays one line.
WIDTH = 1000


class Plain(str):
    """A string written unquoted even where YAML 1.1 reads it as another type.

    GitHub reads workflows as YAML 1.2, where the key `on` is a string; PyYAML
    would quote it as `'on'`, which GitHub accepts but nobody writes.
    """

    __slots__ = ()


class Commented(str):
    """A string followed on its line by a `# comment`: a pinned action's tag."""

    comment: str

    def __new__(cls, value: str, comment: str) -> Commented:
        if "\n" in value or "\n" in comment:
            raise ValueError(f"a commented value is one line: {value!r} # {comment!r}")
        made = super().__new__(cls, value)
        made.comment = comment
        return made


class _Dumper(yaml.SafeDumper):
    """Block style, literal blocks for multi-line strings, lists indented."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._node: yaml.Node | None = None  # the node being serialized

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True

    # A comment rides from its node to its event to the emitter, which writes
    # it after the value: PyYAML has no comments of its own.
    def serialize_node(self, node: yaml.Node, parent: Any, index: Any) -> None:
        self._node = node
        super().serialize_node(node, parent, index)

    def emit(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.ScalarEvent) and self._node is not None:
            event.comment = getattr(self._node, "comment", None)  # type: ignore[attr-defined]
        super().emit(event)

    def process_scalar(self) -> None:
        super().process_scalar()
        comment = getattr(self.event, "comment", None)
        if comment:
            if self.simple_key_context:
                raise ValueError(f"a mapping key cannot carry a comment: {comment!r}")
            self.write_indicator(f"# {comment}", True)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _plain(dumper: _Dumper, value: Plain) -> yaml.ScalarNode:
    # Tagged as what a YAML 1.1 reader would take it for, so it stays unquoted.
    tag = dumper.resolve(yaml.ScalarNode, str(value), (True, False))
    return dumper.represent_scalar(tag, str(value))


def _commented(dumper: _Dumper, value: Commented) -> yaml.ScalarNode:
    node = dumper.represent_scalar("tag:yaml.org,2002:str", str(value))
    node.comment = value.comment  # type: ignore[attr-defined]
    return node


_Dumper.add_representer(str, _str)
_Dumper.add_representer(Plain, _plain)
_Dumper.add_representer(Commented, _commented)


def render(data: Mapping[str, Any], header: str = HEADER) -> str:
    """YAML text for a generated file: same data, same bytes."""
    try:
        body = blockyaml.Writer(_Dumper, WIDTH).document(dict(data))
    except blockyaml.Unsupported:
        body = render_pyyaml(data)
    return header + body


def render_pyyaml(data: Mapping[str, Any]) -> str:
    """The document as PyYAML's emitter writes it: what render's fast path
    (runner.blockyaml) must match byte for byte, and its fallback."""
    return yaml.dump(
        dict(data),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=WIDTH,
    )


def stale(files: Mapping[str, str], root: Path) -> list[str]:
    """Generated files whose content on disk differs from what would be written."""
    out = []
    for rel, text in sorted(files.items()):
        path = root / rel
        try:
            if path.read_bytes() != text.encode():
                out.append(rel)
        except FileNotFoundError:
            out.append(rel)
    return out


def write_atomic(path: Path, text: str) -> None:
    """Replace a file in one step, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_all(files: Mapping[str, str], root: Path) -> list[str]:
    """Write the files that changed; return their paths. Unchanged files keep mtime."""
    changed = stale(files, root)
    for rel in changed:
        write_atomic(root / rel, files[rel])
    return changed
