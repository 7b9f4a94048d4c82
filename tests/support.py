"""Helpers for tests: run the CLI and DVC in a subprocess of this interpreter."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest
from packaging.specifiers import SpecifierSet

from runner.dvcstart import QUIET_ENV

ROOT = Path(__file__).resolve().parent.parent
# Copies of other projects' interfaces (see its README): a clone needs nothing else.
REFERENCE = ROOT / "tests" / "reference"
# No telemetry, no system git config, a fixed identity for commits.
TEST_ENV = {
    **QUIET_ENV,
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    # `mlflow server` otherwise starts a job runner and seven huey consumers
    # (GenAI jobs the framework never submits), each importing MLflow and then
    # polling: about a third of a core for as long as the server runs.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def admitted_pythons() -> list[str]:
    """Every Python release pyproject's requires-python admits, patch by patch,
    up to patch releases that do not exist yet."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = SpecifierSet(project["requires-python"])
    candidates = (f"3.{minor}.{patch}" for minor in range(20) for patch in range(40))
    return [v for v in candidates if v in wanted]


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


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """The files of ``folder`` over HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(folder)
    )
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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


# --- one finished run of the bundled example, shared by the whole session ---

# A text file is rewritten only under this size; the store's are far smaller.
_REWRITE_MAX_BYTES = 1 << 20
# Content-addressed or git's own: copied byte for byte, never rewritten.
_VERBATIM = (".git", ".dvc/cache", ".mlops/dvc-remote")
# DVC outputs keep their bytes, since their hashes are the run's record in dvc.lock.
# The one trace of the run's path there is `artifact_path` in
# artifacts/train/model/MLmodel, which MLflow wrote and nothing reads.
_OUTPUTS = ("artifacts",)


def example_env() -> dict[str, str]:
    """The quiet environment with the local MLflow store, whatever the host says."""
    env = quiet_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def build_example_run(root: Path) -> tuple[str, str]:
    """The bundled example, committed on `main` in a fresh repository, run once cold.

    One commit ("example") holds mlops.yaml and stages/; the run's outputs, dvc.lock
    and the MLflow store in .mlops/ stay uncommitted, as after a first `mlops run`.
    Returns what `mlops run` printed: its stdout and its stderr.
    """
    root.mkdir(parents=True)
    shutil.copytree(
        ROOT / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "mlops.yaml", root / "mlops.yaml")
    env = example_env()
    run(["git", "init", "-q", "-b", "main"], cwd=root, env=env)
    run(["git", "add", "-A", "mlops.yaml", "stages"], cwd=root, env=env)
    run(["git", "commit", "-qm", "example"], cwd=root, env=env)
    proc = run([sys.executable, "-m", "runner.cli", "run"], cwd=root, env=env)
    return proc.stdout, proc.stderr


def _rewritable(root: Path) -> Iterator[Path]:
    """Files of a run that may name its folder: neither verbatim nor DVC outputs."""
    skip = [root / p for p in (*_VERBATIM, *_OUTPUTS)]
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            if not any(path.is_relative_to(s) for s in skip):
                yield path


def store_of(root: Path) -> Path:
    """The SQLite file of a run's MLflow store, as its mlops.yaml names it."""
    import yaml

    spec = yaml.safe_load((root / "mlops.yaml").read_text(encoding="utf-8"))
    uri = str(spec["storage"]["mlflow"]["tracking_uri"])
    assert uri.startswith("sqlite:///"), f"{root}: a local SQLite store, not {uri}"
    return root / uri.removeprefix("sqlite:///")


def _text_cells(db: sqlite3.Connection) -> Iterator[tuple[str, str]]:
    """(table, column) for every column of every table in an SQLite database."""
    tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    for (table,) in tables.fetchall():
        for column in db.execute(f'PRAGMA table_info("{table}")').fetchall():
            yield table, column[1]


def _naming(column: str) -> str:
    """SQL: the column is text holding a path under ``?`` or equal to ``?``.

    Table and column names come from sqlite_master, never from input.
    """
    return f'typeof("{column}") = \'text\' AND (instr("{column}", ?) > 0 OR "{column}" = ?)'


def traces_of(root: Path, old: Path) -> list[str]:
    """Where a copy at ``root`` still names ``old``: store cells and files."""
    needle = f"{old}/"
    found = []
    store = store_of(root)
    db = sqlite3.connect(store)
    try:
        for table, column in _text_cells(db):
            query = f'SELECT count(*) FROM "{table}" WHERE {_naming(column)}'  # noqa: S608
            if db.execute(query, (needle, str(old))).fetchone()[0]:
                found.append(f"{store.relative_to(root)}: {table}.{column}")
    finally:
        db.close()
    for path in _rewritable(root):
        if path.stat().st_size <= _REWRITE_MAX_BYTES and needle.encode() in (
            path.read_bytes()
        ):
            found.append(str(path.relative_to(root)))
    return found


def copy_run(source: Path, dest: Path) -> Path:
    """A private, independent copy of a finished run at ``dest``.

    MLflow's SQLite store records absolute artifact locations (experiments, runs,
    logged models, model versions) and the training script's path, and the model
    it stored names its folder in MLmodel. Each is rewritten from ``source`` to
    ``dest``, so the copy reads and writes only its own store; an AssertionError
    names anything that still points back.
    """
    # Bytecode names its source's path inside marshalled data, which a byte
    # replace would corrupt; Python writes it again for the copy's own files.
    shutil.copytree(
        source, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    old, new = f"{source}/", f"{dest}/"
    db = sqlite3.connect(store_of(dest))
    try:
        with db:
            for table, column in _text_cells(db):
                update = (
                    f'UPDATE "{table}" SET "{column}" = CASE WHEN "{column}" = ? '  # noqa: S608
                    f'THEN ? ELSE replace("{column}", ?, ?) END WHERE {_naming(column)}'
                )
                db.execute(update, (str(source), str(dest), old, new, old, str(source)))
    finally:
        db.close()
    for path in _rewritable(dest):
        if path.stat().st_size <= _REWRITE_MAX_BYTES:
            data = path.read_bytes()
            if old.encode() in data:
                path.write_bytes(data.replace(old.encode(), new.encode()))
    left = traces_of(dest, source)
    assert not left, f"the copy at {dest} still names {source}: {left}"
    return dest
