"""Wire built-in stages together: give outputs paths, resolve inputs by role."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from runner.builtins import ARTIFACTS_DIR, BUILTINS, Output


@dataclass(frozen=True)
class Missing:
    """A required input that no upstream stage provides."""

    stage: str
    role: str


def output_paths(name: str, uses: str) -> dict[str, tuple[str, Output]]:
    """Role -> (path, output) of a built-in stage named `name`."""
    return {
        o.role: (f"{ARTIFACTS_DIR}/{name}/{o.filename}", o)
        for o in BUILTINS[uses].outputs
    }


def folders(path: str) -> Iterator[str]:
    """Every folder f that holds path (path.startswith(f + "/")), outermost first.

    Looking these up in a dict of outputs finds which output holds a path
    without comparing it with every output.
    """
    at = path.find("/")
    while at != -1:
        yield path[:at]
        at = path.find("/", at + 1)


def upstream(name: str, needs: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Ancestors of a stage by distance: [[direct needs], [their needs], ...]."""
    seen = {name}
    levels: list[list[str]] = []
    frontier = [n for n in needs.get(name, ()) if n in needs]
    while frontier:
        level = sorted(set(frontier) - seen)
        if not level:
            break
        seen.update(level)
        levels.append(level)
        frontier = [n for s in level for n in needs.get(s, ()) if n in needs]
    return levels


def resolve_inputs(
    name: str,
    uses: str,
    needs: Mapping[str, Iterable[str]],
    kinds: Mapping[str, str | None],
) -> tuple[dict[str, str], list[Missing]]:
    """Input role -> path for a built-in stage, from its nearest providers.

    The nearest upstream stage that writes a role wins; ties are broken by
    stage name so that the result never depends on dict order.
    """
    resolved: dict[str, str] = {}
    missing: list[Missing] = []
    levels = upstream(name, needs)
    for wanted in BUILTINS[uses].inputs:
        path = _find(wanted.role, levels, kinds)
        if path is not None:
            resolved[wanted.role] = path
        elif wanted.required:
            missing.append(Missing(name, wanted.role))
    return resolved, missing


def _find(
    role: str, levels: list[list[str]], kinds: Mapping[str, str | None]
) -> str | None:
    for level in levels:
        for candidate in level:
            uses = kinds.get(candidate)
            if uses is None:
                continue
            outputs = output_paths(candidate, uses)
            if role in outputs:
                return outputs[role][0]
    return None


def providers(role: str) -> list[str]:
    """Built-in stages that write a role, for error messages."""
    return sorted(
        b.name for b in BUILTINS.values() if any(o.role == role for o in b.outputs)
    )
