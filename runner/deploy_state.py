"""The release record: which model version git says runs in an environment.

`deploy/<environment>/release.json` is state, not generated from mlops.yaml:
`mlops promote` and `mlops rollback` write it, through `write_release`, together
with the manifests it decides, and `mlops compile` reads it to render them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from runner import plan as planner
from runner import write
from runner.errors import RunError
from runner.spec import Spec
from runner.targets import kube, serving_pod

KEYS = ("model", "version", "run_id")
VERSION = re.compile(r"^[1-9][0-9]*$")
RUN_ID = re.compile(r"^[A-Za-z0-9_-]+$")
EXPECTED = '{"model": "<registered name>", "version": "<N>", "run_id": "<run id>"}'


@dataclass(frozen=True)
class Release:
    """One registered model version: its name, its number, the run that made it."""

    model: str
    version: str
    run_id: str


def _problem(release: Release) -> str | None:
    """What makes a release impossible to record, if anything."""
    if not release.model:
        return "model is empty"
    if not VERSION.match(release.version):
        return f"version must be a version number like '3', not {release.version!r}"
    if not RUN_ID.match(release.run_id):
        return f"run_id must be an MLflow run id, not {release.run_id!r}"
    return None


def release_path(spec: Spec) -> str:
    """`deploy/<environment>/release.json`, relative to the repository."""
    return f"{serving_pod.environment_dir(spec)}/{serving_pod.RELEASE_FILE}"


def release_text(release: Release) -> str:
    """The record's exact bytes: fixed key order, one key a line, a newline."""
    return json.dumps(asdict(release), indent=2) + "\n"


def parse_release(text: str, filename: str) -> Release:
    """A release record from its text; RunError naming the file when malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunError(f"{filename}: not JSON ({e}); expected {EXPECTED}") from e
    if not isinstance(data, dict) or set(data) != set(KEYS):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise RunError(f"{filename}: expected exactly {EXPECTED}, got {got}")
    wrong = [k for k in KEYS if not isinstance(data[k], str)]
    if wrong:
        raise RunError(f"{filename}: {', '.join(wrong)} must be strings: {EXPECTED}")
    release = Release(**{k: data[k] for k in KEYS})
    problem = _problem(release)
    if problem:
        raise RunError(f"{filename}: {problem}")
    return release


def read_release(root: Path, spec: Spec) -> Release | None:
    """What `deploy/<environment>/release.json` says runs; None before the first."""
    rel = release_path(spec)
    try:
        text = (root / rel).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as e:
        raise RunError(f"{rel}: not UTF-8 text: {e}") from e
    return parse_release(text, rel)


def release_files(spec: Spec, release: Release) -> dict[str, str]:
    """The record and the manifests it decides, as their exact text."""
    manifests = kube.compile_plan(planner.build(spec), release)
    return {
        release_path(spec): release_text(release),
        **{path: write.render(data) for path, data in sorted(manifests.items())},
    }


def orphans(root: Path, spec: Spec, files: Mapping[str, str]) -> list[str]:
    """Manifests mlops generated for this environment that it no longer would
    (another target, no cluster target): Argo CD would go on applying them.
    A file without the generated header is the team's own and is kept."""
    folder = root / serving_pod.environment_dir(spec)
    found = []
    for path in [*folder.glob("*.yaml"), root / serving_pod.application_file(spec)]:
        rel = path.relative_to(root).as_posix()
        if rel in files or not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as f:
            if f.readline() == write.HEADER:
                found.append(rel)
    return sorted(found)


def remove(root: Path, paths: list[str]) -> None:
    """Delete orphaned manifests, so that git and Argo CD drop them too."""
    for rel in paths:
        (root / rel).unlink()


def write_release(root: Path, spec: Spec, release: Release) -> list[str]:
    """Record a release and re-render its environment's manifests.

    Each file is replaced atomically and only when its bytes change, and
    manifests of another target are removed; returns the paths that changed.
    The record is written first: should the rest fail, `mlops compile`
    renders the manifests from it again.
    """
    problem = _problem(release)
    if problem:
        raise RunError(f"cannot record {release} in {release_path(spec)}: {problem}")
    files = release_files(spec, release)  # raises before anything is written
    record = release_path(spec)
    changed = write.stale(files, root)
    for rel in sorted(changed, key=lambda rel: rel != record):
        write.write_atomic(root / rel, files[rel])
    gone = orphans(root, spec, files)
    remove(root, gone)
    return sorted(changed + gone)
