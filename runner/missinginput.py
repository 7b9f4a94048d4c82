"""Say which input of a stage is missing, and where the spec names it.

DVC hashes a stage's dependencies before it runs the stage, so a data path
with a typo fails with ``ERROR: failed to reproduce 'ingest': [Errno 2] No
such file or directory: '/abs/path'``, before any "Running stage" line. The
run's error should name the stage, the file as the spec spells it, the key
that holds it (file, line and column) and what to do.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from runner import wiring, yamlsource
from runner.errors import closest

if TYPE_CHECKING:
    from runner.plan import Plan

# DVC's one-line error for a stage it could not reproduce.
NOT_REPRODUCED = re.compile(r"ERROR: failed to reproduce '([^']+)'")
_NO_FILE = re.compile(r"\[Errno 2\] No such file or directory: '([^']+)'")
# A data file that DVC tracks (`dvc add`) and this checkout lacks: DVC names
# its .dvc file as the stage that failed.
_NOT_CHECKED_OUT = re.compile(r"missing data 'sources?': ([^,]+)")


def _missing(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(what DVC named as the stage, the missing path) from its error lines."""
    found = []
    for line in lines:
        if failed := NOT_REPRODUCED.search(line):
            if m := _NO_FILE.search(line) or _NOT_CHECKED_OUT.search(line):
                found.append((failed.group(1), m.group(1).strip()))
    return found


def failed_stage(lines: Iterable[str], plan: Plan) -> str | None:
    """The spec's stage DVC says it failed to reproduce, if it said.

    For a tracked data file that is not checked out, that is the first stage
    that reads it, not the .dvc file.
    """
    lines = list(lines)
    named = [m.group(1) for line in lines if (m := NOT_REPRODUCED.search(line))]
    if not named:
        return None
    stages = {s.name for s in plan.stages}
    if named[-1] in stages:
        return named[-1]
    for dvc_file, path in _missing(lines):
        if dvc_file == named[-1]:
            wanted = posixpath.normpath(path)
            readers = [s.name for s in plan.stages if _reads(s.deps, wanted)]
            if readers:
                return readers[0]
    return named[-1]


def _reads(deps: Iterable[str], path: str) -> bool:
    """Whether ``path`` is one of ``deps`` or inside one of them."""
    return not {path, *wiring.folders(path)}.isdisjoint(deps)


def _relative(path: str, root: Path) -> str:
    absolute = os.path.abspath(os.path.join(root, path))
    return Path(os.path.relpath(absolute, os.path.abspath(root))).as_posix()


def _nearby(path: str, root: Path) -> str:
    """'; did you mean ...' from the files beside where the path points, by
    name (the folder they share would make any two look alike)."""
    parent, name = posixpath.split(path)
    try:
        names = sorted(os.listdir(root / parent))
    except OSError:
        return ""
    close = closest(name, names)
    return f"; did you mean {posixpath.join(parent, close)!r}?" if close else ""


def _source_of(plan: Plan, path: str) -> str:
    """`` (data source 'x', mlops.yaml:12:5: data -> x -> path)``, if one is."""
    for name, source in plan.spec.data.items():
        given = source.get("path")
        if isinstance(given, str) and posixpath.normpath(given) == path:
            key = ("data", name, "path")
            return (
                f" (data source {name!r}, "
                f"{yamlsource.locate(plan.spec.filename, key, given)})"
            )
    return ""


def explain(lines: Iterable[str], plan: Plan, stage: str, root: Path) -> str:
    """The sentence to add to a failed run's error, or '' if no input was missing.

    Only DVC's own error line counts: a stage that ran and failed on a
    missing file says so itself, and DVC then says it "failed to run".
    """
    missing = _missing(lines)
    if not missing:
        return ""
    path = _relative(missing[-1][1], root)
    try:
        deps = plan.stage(stage).deps
    except KeyError:
        return ""
    if not _reads(deps, path):
        return ""
    text = f": its input {path!r} does not exist{_source_of(plan, path)}"
    if (root / f"{path}.dvc").is_file():
        return (
            f"{text}; {path}.dvc tracks it but this checkout lacks the data: "
            f"run `mlops run --pull` or `dvc pull {path}`"
        )
    return text + _nearby(path, root)
