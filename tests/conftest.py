"""Shared fixtures: a quiet environment and throw-away git + DVC repositories."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import ROOT, run


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No telemetry, no user git config, a fixed identity for commits."""
    for key, value in {
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
    }.items():
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
