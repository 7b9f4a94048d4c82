"""Shared fixtures: a quiet environment and throw-away git + DVC repositories."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import ROOT, TEST_ENV, run


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
