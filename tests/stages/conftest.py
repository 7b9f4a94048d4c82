"""Fixtures for the built-in stage tests: a temp project with params.yaml."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner import plan as planner
from runner import spec as specs
from runner.dvcstart import QUIET_ENV


def build_params(
    pipeline: list[tuple[str, str, dict[str, Any]]],
    *,
    data: dict[str, Any],
    task: str = "classification",
    target: str = "target",
    gates: list[dict[str, Any]] | None = None,
    name: str = "demo",
) -> dict[str, Any]:
    """params.yaml as the real compiler writes it for a linear chain of stages."""
    stages: dict[str, Any] = {}
    previous: str | None = None
    for stage_id, kind, settings in pipeline:
        stage: dict[str, Any] = {"uses": kind}
        if settings:
            stage["with"] = settings
        if previous is not None:
            stage["needs"] = [previous]
        stages[stage_id] = stage
        previous = stage_id
    doc: dict[str, Any] = {
        "version": 1,
        "project": {"name": name, "task": task, "target": target, "seed": 42},
        "data": data,
        "pipeline": stages,
        "gates": gates or [],
    }
    spec = specs.parse(yaml.safe_dump(doc, sort_keys=False))
    return planner.build(spec).params


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[dict[str, Any]], Path]:
    """Write params.yaml into a fresh directory, chdir there, use its own MLflow."""
    for key, value in QUIET_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)

    def write(params: dict[str, Any]) -> Path:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return tmp_path

    return write


def run_stage(kind: str, stage_id: str | None = None) -> int:
    """Run ``stages.<kind>.main([stage_id])`` in-process and return its exit code."""
    module = importlib.import_module(f"stages.{kind}")
    return module.main([stage_id or kind])


def registry_versions(root: Path, name: str) -> list[Any]:
    """Model versions of ``name`` in the temp project's MLflow store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
    return list(client.search_model_versions(f"name='{name}'"))
