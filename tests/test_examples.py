"""Every folder under examples/: small, reproducible, and run end to end.

Each example is copied into a fresh git repository and run with the installed
wheel, as a team would: `mlops run` runs every stage, and a second `mlops run`
computes nothing. The penguins spec is exactly what `mlops init` writes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.installed import Installed, installed_framework
from tests.support import ROOT

EXAMPLES = ROOT / "examples"
FOLDERS = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
MAX_BYTES = 64 * 1024
RAN = re.compile(r"\] (\S+): running")
IGNORED = shutil.ignore_patterns("__pycache__", ".mlops", "artifacts")


@pytest.fixture(scope="module")
def framework(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return installed_framework(tmp_path_factory)


def _files(folder: Path) -> list[Path]:
    return [
        p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ]


def _fresh(tmp_path: Path, name: str, *only: str) -> Path:
    """A new git repository holding the example (or only some of its files)."""
    repo = tmp_path / name
    source = EXAMPLES / name
    if only:
        repo.mkdir()
        for part in only:
            if (source / part).is_dir():
                shutil.copytree(source / part, repo / part, ignore=IGNORED)
            else:
                shutil.copy2(source / part, repo / part)
    else:
        shutil.copytree(source, repo, ignore=IGNORED)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


def _run_twice(framework: Installed, repo: Path, stages: list[str]) -> None:
    first = framework.mlops("run", cwd=repo)
    assert sorted(RAN.findall(first)) == sorted(stages), first
    second = framework.mlops("run", cwd=repo)
    assert RAN.findall(second) == [], second
    assert f"{len(stages)} stages, 0 ran, {len(stages)} unchanged" in second, second


def test_there_are_examples_each_with_a_readme() -> None:
    assert len(FOLDERS) >= 3, FOLDERS
    for name in FOLDERS:
        folder = EXAMPLES / name
        assert (folder / "mlops.yaml").is_file(), name
        assert "mlops run" in (folder / "README.md").read_text(), name


@pytest.mark.parametrize("name", FOLDERS)
def test_example_is_small(name: str) -> None:
    size = sum(p.stat().st_size for p in _files(EXAMPLES / name))
    assert size <= MAX_BYTES, f"examples/{name} holds {size} bytes"


@pytest.mark.parametrize("name", FOLDERS)
def test_generated_data_comes_back_byte_for_byte(name: str, tmp_path: Path) -> None:
    copy = tmp_path / name
    shutil.copytree(EXAMPLES / name, copy, ignore=IGNORED)
    script = copy / "make_data.py"
    assert script.is_file(), f"examples/{name} has no make_data.py"
    shipped = {p.relative_to(copy): p.read_bytes() for p in (copy / "data").iterdir()}
    for path in shipped:
        (copy / path).unlink()
    subprocess.run([sys.executable, script], cwd=tmp_path, check=True,
                   capture_output=True)  # fmt: skip
    made = {p.relative_to(copy): p.read_bytes() for p in (copy / "data").iterdir()}
    assert made == shipped


def test_penguins_is_what_init_writes(framework: Installed, tmp_path: Path) -> None:
    repo = _fresh(tmp_path, "penguins", "data")
    framework.mlops("init", "--data", "data/penguins.csv", "--target", "species",
                    "--name", "penguins", cwd=repo)  # fmt: skip
    assert (repo / "mlops.yaml").read_text() == (
        EXAMPLES / "penguins" / "mlops.yaml"
    ).read_text()
    stages = ["ingest", "validate", "preprocess", "train", "evaluate", "register"]
    _run_twice(framework, repo, stages)
    metrics = json.loads((repo / "artifacts/evaluate/metrics.json").read_text())
    assert metrics["balanced_accuracy"] > 0.8, metrics
    validation = json.loads((repo / "artifacts/validate/validation.json").read_text())
    assert validation["passed"] is True


def test_bikes_tunes_then_trains_a_regression(
    framework: Installed, tmp_path: Path
) -> None:
    repo = _fresh(tmp_path, "bikes")
    stages = [
        "ingest",
        "validate",
        "preprocess",
        "tune",
        "train",
        "evaluate",
        "register",
    ]
    _run_twice(framework, repo, stages)
    best = json.loads((repo / "artifacts/tune/best_params.json").read_text())
    assert set(best) == {"n_estimators", "learning_rate", "max_depth", "subsample"}
    metrics = json.loads((repo / "artifacts/evaluate/metrics.json").read_text())
    assert metrics["r2"] > 0.7, metrics
    gates = json.loads((repo / "artifacts/evaluate/gates.json").read_text())
    assert gates["passed"] is True, gates


def test_custom_stages_run_beside_built_ins(
    framework: Installed, tmp_path: Path
) -> None:
    repo = _fresh(tmp_path, "custom-stages")
    stages = ["features", "ingest", "validate", "preprocess", "train", "evaluate",
              "cost", "register"]  # fmt: skip
    _run_twice(framework, repo, stages)
    cost = json.loads((repo / "artifacts/cost/cost.json").read_text())
    assert cost["test_rows"] > 100 and cost["cost"] > 0, cost
    # A custom stage's `with:` is a parameter: a new price re-runs cost alone.
    spec = repo / "mlops.yaml"
    spec.write_text(spec.read_text().replace("false_alarm: 300", "false_alarm: 200"))
    out = framework.mlops("run", cwd=repo)
    assert RAN.findall(out) == ["cost"], out
    assert (
        json.loads((repo / "artifacts/cost/cost.json").read_text())["cost"]
        < cost["cost"]
    )
