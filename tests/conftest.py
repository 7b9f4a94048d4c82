"""Shared fixtures: a quiet environment, throw-away git + DVC repositories, and
one finished run of the bundled example for the whole session.

``example_run`` (session scope) runs the example once, cold, and every module
that needs a finished run takes a private copy of it instead of running it
again::

    @pytest.fixture(scope="module")
    def repo(tmp_path_factory, example_run):
        return example_run.copy(tmp_path_factory.mktemp("mine") / "repo")

The copy is a git repository on `main` with one commit ("example": mlops.yaml
and stages/), the run's outputs, dvc.lock, the DVC cache and the MLflow store
in .mlops/ (version 1 of cancer-classifier @candidate). It is independent: its
store names only its own folder (tests/support.copy_run rewrites the paths
MLflow records, and fails if any remain; tests/test_example_e2e.py proves it).
Never write into ``example_run.root`` itself: every copy would see it, and
``copy`` fails once its store has changed. ``example_run.stdout`` and
``.stderr`` are what that cold `mlops run` printed, for assertions on the cold
run itself.

Under pytest-xdist the workers share it: the first to need it builds it under
a file lock in the folder above the workers' own temp folders, the other waits
for it, so a session pays for one cold run.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# Before any test module imports jsonschema: without the libraries behind its
# format checkers, which no test uses and which cost each worker 0.85 s.
import runner.jsonschema_import  # noqa: F401
import stages
from tests import figures
from tests.support import ROOT, TEST_ENV, build_example_run, copy_run, run, store_of

# A worker is a batch process too: what it imports and builds mostly lives for
# the session (stages.batch_gc; 5 % of the in-process tests' CPU).
stages.batch_gc()

# The longest modules first, in this order; the rest follow in collection
# order. `make test` runs three workers with `--dist loadfile
# --no-loadscope-reorder`: whole modules, handed out in this order (by default
# xdist orders them by test count, which started the rehearsal, 10 tests and a
# sixth of the suite's worker time, near the end). Longest first keeps a long
# one from being the last thing running while the others idle. Two of them
# mostly wait (a paced load, serving_load; client retries with back-off,
# mlflow_faults): 0.1-0.3 of a core for 50-70 s. In collection order they ran
# side by side and a core idled for a minute (bench/README.md#test-suite), so
# each is placed where the modules beside it keep both cores busy. Tests inside
# a module keep their order.
FIRST = (
    "test_rehearsal.py",
    "test_promote.py",
    "test_example_e2e.py",
    "test_serving_load.py",  # waits
    "test_monitor.py",
    "test_examples.py",
    "test_mlflow_faults.py",  # waits
    "test_serve.py",
    "test_runcache.py",
)


def module_order(paths: list[str]) -> list[str]:
    """The modules' order: FIRST, then the rest in collection order."""
    first = [p for name in FIRST for p in paths if Path(p).name == name]
    return first + [p for p in paths if p not in first]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the modules (see module_order); tests keep their order inside."""
    paths = list(dict.fromkeys(str(item.path) for item in items))
    position = {path: i for i, path in enumerate(module_order(paths))}
    items.sort(key=lambda item: position[str(item.path)])


# Rows of the README's reliability table, collected from the reports (under
# pytest-xdist, the controller sees every worker's; see tests/figures.py).
_FIGURES: dict[str, dict] = {}


@pytest.fixture
def figure(record_property):
    """Record this test's row of the reliability table (tests/figures.py)."""

    def record(kind: str, case: str, result: str, **numbers: object) -> None:
        record_property(figures.PROPERTY, figures.row(kind, case, result, numbers))

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        for name, value in report.user_properties:
            if name == figures.PROPERTY:
                _FIGURES[report.nodeid] = value


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller, or no xdist
        figures.merge(_FIGURES)


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No telemetry, no user git config, a fixed identity for commits."""
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty git repository with the project's stages, as a template user has."""
    root = tmp_path / "repo"
    root.mkdir()
    run(["git", "init", "-q"], cwd=root)
    shutil.copytree(
        ROOT / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class ExampleRun:
    """The session's finished run of the example: copy it, never change it."""

    root: Path
    store_sha256: str
    stdout: str  # what the cold `mlops run` printed
    stderr: str

    def copy(self, dest: Path) -> Path:
        """A private copy at ``dest`` (which must not exist); returns ``dest``."""
        now = _digest(store_of(self.root))
        assert now == self.store_sha256, (
            f"a test wrote into the shared run's MLflow store at {self.root}: "
            "take a copy with example_run.copy() and change that"
        )
        return copy_run(self.root, dest)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture(scope="session")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> ExampleRun:
    """The bundled example run once for the session (see the module docstring)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this session's folder, above every worker's own
    folder = base / "example-run"
    done, stdout = folder / "store.sha256", folder / "run.stdout"
    stderr = folder / "run.stderr"
    with _locked(base / "example-run.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed
            stdout.parent.mkdir(parents=True)
            out, err = build_example_run(folder / "repo")
            stdout.write_text(out)
            stderr.write_text(err)
            done.write_text(_digest(store_of(folder / "repo")))
    return ExampleRun(
        folder / "repo", done.read_text(), stdout.read_text(), stderr.read_text()
    )
