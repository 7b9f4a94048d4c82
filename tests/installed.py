"""The framework as a user gets it: a built wheel in a fresh venv, no source tree.

Import these from any test that must run the installed framework:

    from tests.installed import Installed, installed_framework

    @pytest.fixture(scope="session")
    def framework(tmp_path_factory):
        return installed_framework(tmp_path_factory)

    def test_x(framework, tmp_path):
        framework.mlops("run", cwd=repo)

The wheel is built once per test session (and once for all xdist workers,
under a file lock), from a copy of the project's files, never in the working
tree. The venv sees the dev venv's third-party packages through a `.pth` line
but not this repository: its `runner` and `stages` are the wheel's. The shared
venv is read-only by convention; a test that edits installed files (to
simulate an upgrade) makes its own with :func:`make_venv`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner import framework as fw
from runner.builtins import BUILTINS
from runner.framework import Framework
from tests.support import ROOT, TEST_ENV

# What the wheel is built from: everything else in the tree is not the product.
BUILD_INPUTS = (
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "constraints.txt",
    "Dockerfile.team",
    "schema",
    "runner",
    "stages",
)
CACHE_DIR = "mlops-installed"


@dataclass(frozen=True)
class Installed:
    """A venv with the framework installed from its wheel."""

    venv: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def site_packages(self) -> Path:
        out = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return Path(out.stdout.strip())

    def env(self) -> dict[str, str]:
        """A user's shell: this venv's bin first, no PYTHONPATH, quiet tools."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(TEST_ENV)
        env.pop("MLFLOW_TRACKING_URI", None)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        return env

    def run(
        self, *args: str | Path, cwd: Path, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """A command of this venv (e.g. "mlops", "python") in cwd."""
        exe = self.bin / str(args[0])
        proc = subprocess.run(
            [exe, *args[1:]], cwd=cwd, env=self.env(), capture_output=True,
            text=True, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            pytest.fail(
                f"{' '.join(map(str, args))} exited {proc.returncode} in {cwd}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def mlops(self, *args: str, cwd: Path, check: bool = True) -> str:
        """`mlops <args>` from this venv's console script; its stdout."""
        return self.run("mlops", *args, cwd=cwd, check=check).stdout


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def copy_sources(src: Path) -> Path:
    """The files the distribution is built from, copied to src."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    return src


def build_wheel(dest: Path) -> Path:
    """Build the framework's wheel from a copy of its files; return its path."""
    src = copy_sources(dest / "src")
    out = dest / "dist"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--wheel-dir", out, src],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = out.glob("mlops_gitops-*.whl")
    return wheel


def make_venv(path: Path, wheel: Path) -> Installed:
    """A fresh venv over the dev venv's packages, with the wheel installed."""
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", path], check=True
    )  # fmt: skip
    made = Installed(path, wheel)
    # The dev venv's site-packages as a plain path: its own .pth files (the
    # editable install's finder among them) are not processed from there.
    dev_site = sysconfig.get_paths()["purelib"]
    (made.site_packages / "dev-venv.pth").write_text(dev_site + "\n")
    # --ignore-installed: pip sees the dev venv's editable mlops-gitops on
    # sys.path; it must neither skip the wheel nor uninstall that one.
    subprocess.run(
        [made.python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--ignore-installed", "--disable-pip-version-check", wheel],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return made


def installed_framework(factory: pytest.TempPathFactory) -> Installed:
    """The session's shared venv with the wheel installed, built once for all
    xdist workers of this run. Do not modify it: use make_venv for that."""
    base = factory.getbasetemp()
    # An xdist worker's basetemp is popen-gwN inside this run's own folder,
    # which all workers share; without xdist that folder is basetemp itself
    # (its parent holds every run's, so a cache there would outlive the run).
    shared = (
        base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    ) / CACHE_DIR
    with _locked(shared / "lock"):
        done = shared / "ready"
        venv = shared / "venv"
        if done.is_file():
            return Installed(venv, Path(done.read_text()))
        wheel = build_wheel(shared / "build")
        made = make_venv(venv, wheel)
        done.write_text(str(wheel))
        return made


def golden_framework(case: str, install: str | None = None) -> Framework:
    """The framework a golden case compiles for: a copy of this repository's
    template, or (cases named `installed*`) a stand-in installed framework
    whose version, digests and packaged files are fixed, so that editing a
    stage module does not change a golden file (tests/test_packaging.py
    checks the real digests)."""
    if not case.startswith("installed"):
        return fw.TEMPLATE
    version = "0.0.0"
    return fw.Framework(
        fw.Mode.INSTALLED,
        version=version,
        digests={
            kind: hashlib.sha256(f"stand-in for {kind}".encode()).hexdigest()
            for kind in BUILTINS
        },
        install=fw.requirement(install, version),
        constraints="# stand-in for the framework's constraints.txt\n",
        dockerfile="# stand-in for the framework's Dockerfile.team\n",
    )
