"""Spec -> plan -> every target's files, rendered and ready to write."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runner import deploy_state, gcpause, write
from runner import framework as fw
from runner import plan as planner
from runner.deploy_state import Release
from runner.spec import Spec
from runner.targets import argo, dvc, github, install, kube

# A file's data to render as YAML, or its text as is.
Files = Mapping[str, Mapping[str, Any] | str]
Target = Callable[[planner.Plan], Files]
ReleaseTarget = Callable[[planner.Plan, Release | None], Files]
# Each target is a pure function: plan in, {path: data} out.
TARGETS: tuple[Target, ...] = (
    dvc.compile_plan,
    argo.compile_plan,
    github.compile_plan,
    install.compile_plan,
)
# The deploy targets also take the release record (deploy/<env>/release.json),
# state that `mlops promote` writes, read from disk by compile_to alone.
RELEASE_TARGETS: tuple[ReleaseTarget, ...] = (kube.compile_plan,)


def render(
    spec: Spec,
    release: Release | None = None,
    framework: fw.Framework = fw.TEMPLATE,
) -> dict[str, str]:
    """Every generated file's path and exact text for this spec and release,
    in a repository of framework's mode (by default, a copy of this one)."""
    with gcpause.paused():
        plan = planner.build(spec, framework)
        outputs = [target(plan) for target in TARGETS]
        outputs += [target(plan, release) for target in RELEASE_TARGETS]
        files: dict[str, Mapping[str, Any] | str] = {}
        for output in outputs:
            for path, data in output.items():
                if path in files:
                    raise ValueError(f"two targets generate {path}")
                files[path] = data
        return {
            path: data if isinstance(data, str) else write.render(data)
            for path, data in sorted(files.items())
        }


def framework_for(spec: Spec, root: Path) -> fw.Framework:
    """The mode of the repository at root (runner.framework.detect)."""
    return fw.detect(root, spec.ci.get("install"))


def render_at(
    spec: Spec, root: Path, framework: fw.Framework = fw.TEMPLATE
) -> dict[str, str]:
    """The generated files of the repository at root, with its release record."""
    return render(spec, deploy_state.read_release(root, spec), framework)


def compile_to(
    spec: Spec,
    root: Path,
    *,
    check: bool = False,
    framework: fw.Framework | None = None,
) -> list[str]:
    """Write the generated files under root (or, with check, only list stale ones).

    The repository's mode is detected from root unless framework is given.
    Serving manifests no longer generated (the deploy target changed) are
    stale too: they are removed, or Argo CD would go on applying them.
    """
    if framework is None:
        framework = framework_for(spec, root)
    files = render_at(spec, root, framework)
    gone = deploy_state.orphans(root, spec, files)
    if check:
        return sorted(write.stale(files, root) + gone)
    changed = write.write_all(files, root)
    deploy_state.remove(root, gone)
    return sorted(changed + gone)
