"""The one writer of generated files: deterministic YAML, atomic writes, --check."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

HEADER = "# Generated from mlops.yaml by mlops compile. Do not edit.\n"


class _Dumper(yaml.SafeDumper):
    """Block style, literal blocks for multi-line strings, lists indented."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(data: Mapping[str, Any], header: str = HEADER) -> str:
    """YAML text for a generated file: same data, same bytes."""
    body = yaml.dump(
        dict(data),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1000,
    )
    return header + body


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
