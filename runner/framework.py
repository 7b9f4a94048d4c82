"""The running framework: its version, its packaged files, and how a repository
uses it.

A repository uses the framework in one of two modes, decided by
:func:`detect` from the repository alone:

- template: the repository root holds the framework's own ``stages/``
  package (this repository, or a copy of it). DVC runs
  ``python -m stages.<kind>`` from the root, and each built-in stage depends
  on its modules there as files.
- installed: anything else, e.g. a team's repository with the framework
  installed from a wheel. DVC runs ``mlops stage <kind> <name>``, which cannot
  be shadowed by a folder of the repository, and each built-in stage depends
  on a digest of its installed modules, written into ``params.yaml`` beside the
  framework's version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from importlib import metadata
from pathlib import Path

from runner.builtins import BUILTINS, STAGES_PACKAGE

DISTRIBUTION = "mlops-gitops"
# Where the wheel carries the files kept at the repository root in a checkout
# (setup.py copies them in at build time, so the repository holds one copy).
PACKAGED_DIR = Path(__file__).resolve().parent / "_data"
SOURCE_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "schema/mlops.schema.json"
CONSTRAINTS = "constraints.txt"
TEAM_DOCKERFILE = "Dockerfile.team"
PACKAGED_FILES = (SCHEMA, CONSTRAINTS, TEAM_DOCKERFILE)

# What `mlops compile` writes into a repository in installed mode, for CI and
# the image to install the same framework with the same dependencies.
REQUIREMENTS_FILE = "mlops-requirements.txt"
CONSTRAINTS_FILE = "mlops-constraints.txt"
DOCKERFILE_FILE = "mlops.Dockerfile"
# The key of params.yaml holding the framework's version and stage digests:
# a built-in stage depends on `framework.digests.<kind>`.
PARAMS_KEY = "framework"
VERSION_KEY = "version"
DIGESTS_KEY = "digests"


class Mode(Enum):
    TEMPLATE = "template"
    INSTALLED = "installed"


@dataclass(frozen=True)
class Framework:
    """What a compilation needs to know of the framework it runs for."""

    mode: Mode
    version: str = ""
    # Built-in kind -> sha256 of its modules (installed mode only).
    digests: Mapping[str, str] = field(default_factory=dict)
    # The pinned requirement CI and the image install (installed mode only).
    install: str = ""
    constraints: str = ""
    dockerfile: str = ""

    @property
    def installed(self) -> bool:
        return self.mode is Mode.INSTALLED


TEMPLATE = Framework(Mode.TEMPLATE)


def packaged_file(name: str) -> Path:
    """A file the wheel ships (one of PACKAGED_FILES), wherever it is installed.

    In a wheel it sits in ``runner/_data/``; in a checkout (editable install,
    or no install at all) it is the repository's own file.
    """
    if name not in PACKAGED_FILES:
        raise ValueError(f"{name} is not a packaged file of {DISTRIBUTION}")
    packaged = PACKAGED_DIR / name
    return packaged if packaged.is_file() else SOURCE_ROOT / name


@cache
def version() -> str:
    """The installed distribution's version (from its metadata, no import)."""
    return metadata.version(DISTRIBUTION)


def stages_dir() -> Path:
    """The framework's own stages package, installed beside runner."""
    return SOURCE_ROOT / STAGES_PACKAGE


def module_files(kind: str) -> tuple[str, ...]:
    """The files of a built-in stage's own code, relative to the package root."""
    return BUILTINS[kind].modules


def digest(root: Path, files: Iterable[str]) -> str:
    """sha256 over each file's relative path and bytes, in sorted order."""
    h = hashlib.sha256()
    for rel in sorted(set(files)):
        data = (root / rel).read_bytes()
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def is_template(root: Path) -> bool:
    """True when root holds every module of the framework's built-in stages."""
    files = {f for kind in BUILTINS for f in module_files(kind)}
    return all((root / f).is_file() for f in files)


def git_pin(direct_url: str | None) -> str | None:
    """``git+https://<repository>@<commit>`` from a distribution's PEP 610
    ``direct_url.json``, when pip installed it from a git repository that CI
    can reach too; None for anything else (an index, a wheel or a folder on
    this machine). The URL must fit ``ci.install``'s pattern, which leaves out
    credentials (no ``@`` before the commit)."""
    import json
    import re

    from runner.schema import schema

    try:
        data = json.loads(direct_url or "null")
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("vcs_info"), dict):
        return None
    vcs, url = data["vcs_info"], data.get("url")
    if vcs.get("vcs") != "git" or not isinstance(url, str):
        return None
    pin = f"git+{url}@{vcs.get('commit_id')}"
    pattern = schema()["$defs"]["ci"]["properties"]["install"]["pattern"]
    return pin if re.fullmatch(pattern, pin) else None


def installed_from_git() -> str | None:
    """This framework's :func:`git_pin`, if pip installed it from git."""
    try:
        found = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    return git_pin(found)


def requirement(install: str | None, version: str, git: str | None = None) -> str:
    """What CI installs: `ci.install`, else the framework running now: the
    git commit it was installed from (``git``), else its version."""
    return install or git or f"{DISTRIBUTION}=={version}"


def installed(install: str | None = None) -> Framework:
    """The running framework, for a repository that installs it."""
    return Framework(
        Mode.INSTALLED,
        version=version(),
        digests={k: digest(SOURCE_ROOT, module_files(k)) for k in sorted(BUILTINS)},
        install=requirement(install, version(), installed_from_git()),
        constraints=packaged_file(CONSTRAINTS).read_text(encoding="utf-8"),
        dockerfile=packaged_file(TEAM_DOCKERFILE).read_text(encoding="utf-8"),
    )


def detect(root: Path, install: str | None = None) -> Framework:
    """The mode of the repository at root, with what it needs to compile."""
    if is_template(root):
        return TEMPLATE
    return installed(install)
