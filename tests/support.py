"""Helpers for tests: run the CLI and DVC in a subprocess of this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Copies of other projects' interfaces (see its README): a clone needs nothing else.
REFERENCE = ROOT / "tests" / "reference"
# No telemetry, no system git config, a fixed identity for commits.
TEST_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def missing(reason: str) -> NoReturn:
    """Skip for want of a tool on a developer's machine, but fail in CI.

    `make test` installs every tool, so in CI (`CI` set) a missing one means a
    broken set-up, which must not pass as a skipped test.
    """
    __tracebackhide__ = True  # report the test that needs the tool, not this line
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing tool fails there)")
    pytest.skip(reason)


def unresolved_refs(doc: Any) -> list[str]:
    """Every `#/definitions/...` reference in a document that names no definition."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref.removeprefix("#/definitions/")
                if ref == name or name not in doc["definitions"]:
                    found.append(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


def quiet_env() -> dict[str, str]:
    """This process's environment, quietened, with this interpreter's bin first."""
    env = {**os.environ, **TEST_ENV}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    return env


def run(
    args: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command with this interpreter's bin first on PATH."""
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=env or quiet_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def mlops(
    *args: str, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "runner.cli", *args], cwd=cwd, check=check)


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=check)
