"""Spec -> plan -> every target's files, rendered and ready to write."""

from __future__ import annotations

from pathlib import Path

from runner import plan as planner
from runner import write
from runner.spec import Spec
from runner.targets import dvc


def render(spec: Spec) -> dict[str, str]:
    """Every generated file's path and exact text for this spec."""
    plan = planner.build(spec)
    files = dvc.compile_plan(plan)
    return {path: write.render(data) for path, data in sorted(files.items())}


def compile_to(spec: Spec, root: Path, *, check: bool = False) -> list[str]:
    """Write the generated files under root (or, with check, only list stale ones)."""
    files = render(spec)
    if check:
        return write.stale(files, root)
    return write.write_all(files, root)
