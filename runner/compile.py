"""Spec -> plan -> every target's files, rendered and ready to write."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runner import plan as planner
from runner import write
from runner.spec import Spec
from runner.targets import argo, dvc, github

Target = Callable[[planner.Plan], Mapping[str, Mapping[str, Any]]]
# Each target is a pure function: plan in, {path: data} out.
TARGETS: tuple[Target, ...] = (
    dvc.compile_plan,
    argo.compile_plan,
    github.compile_plan,
)


def render(spec: Spec) -> dict[str, str]:
    """Every generated file's path and exact text for this spec."""
    plan = planner.build(spec)
    files: dict[str, Mapping[str, Any]] = {}
    for target in TARGETS:
        for path, data in target(plan).items():
            if path in files:
                raise ValueError(f"two targets generate {path}")
            files[path] = data
    return {path: write.render(data) for path, data in sorted(files.items())}


def compile_to(spec: Spec, root: Path, *, check: bool = False) -> list[str]:
    """Write the generated files under root (or, with check, only list stale ones)."""
    files = render(spec)
    if check:
        return write.stale(files, root)
    return write.write_all(files, root)
