"""The bundled example through `mlops run`: real DVC, real MLflow, real models."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ExampleRun
from tests.support import ROOT, copy_run, mlops, quiet_env, traces_of

RAN = re.compile(r"\] (\S+): running")


def _example(repo: Path) -> Path:
    shutil.copy(ROOT / "mlops.yaml", repo / "mlops.yaml")
    return repo


def _this_repository(repo: Path) -> Path:
    """Every file git tracks here, goldens and their dvc.yaml files included,
    beside a finished run: the run's own files (its spec, stages, dvc.lock and
    outputs) are kept."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source, target = ROOT / name, repo / name
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return repo


def _registry(repo: Path, uri: str | None = None) -> list[dict[str, object]]:
    """Model versions in the registry: the repository's local store, or ``uri``.

    Read from this process (one import of MLflow for the module, as
    tests/test_promote.py does, instead of a Python process per look-up).
    """
    import mlflow

    client = mlflow.MlflowClient(uri or f"sqlite:///{repo}/.mlops/mlflow.db")
    out: list[dict[str, object]] = []
    for v in client.search_model_versions("name='cancer-classifier'"):
        model = client.get_registered_model(v.name)
        aliases = [a for a, n in model.aliases.items() if n == v.version]
        out.append({"version": v.version, "aliases": aliases, "tags": v.tags})
    return out


def test_example_runs_then_skips_then_reruns_only_downstream(
    example_run: ExampleRun, tmp_path: Path
) -> None:
    # The session's cold run of the example (tests/conftest.py) is the first run.
    first = example_run.stdout
    # Nothing but the run's own lines: no library's warnings (deepchecks'
    # pkg_resources one, from a stage or the warm server that preloads it).
    assert "Warning" not in first + example_run.stderr, example_run.stderr
    repo = example_run.copy(tmp_path / "repo")
    # This repository's own layout: tests/golden/*/dvc.yaml hold stages with the
    # same names, which neither the plan nor the later runs may count as ours.
    _this_repository(repo)
    assert any((repo / "tests" / "golden").glob("*/dvc.yaml"))
    assert RAN.findall(first) == [
        "ingest",
        "validate",
        "preprocess",
        "train",
        "evaluate",
        "register",
    ]
    metrics = json.loads((repo / "artifacts/evaluate/metrics.json").read_text())
    assert metrics["accuracy"] > 0.9
    gates = json.loads((repo / "artifacts/evaluate/gates.json").read_text())
    assert gates["passed"] is True
    versions = _registry(repo)
    assert len(versions) == 1 and versions[0]["aliases"] == ["candidate"]

    plan = mlops("plan", cwd=repo).stdout
    assert plan.splitlines()[0] == "0 of 6 stages would run:", plan
    assert "golden" not in plan

    second = mlops("run", cwd=repo).stdout
    assert RAN.findall(second) == []
    assert "6 stages, 0 ran, 6 unchanged" in second

    spec = repo / "mlops.yaml"
    spec.write_text(spec.read_text().replace("n_estimators: 200", "n_estimators: 50"))
    plan = mlops("plan", cwd=repo).stdout
    assert "\n3 of 6 stages would run:\n" in plan, plan  # after "compiled ..."
    assert re.findall(r"^  (\S+)", plan, re.M) == ["train", "evaluate", "register"]
    assert "stages.train" in plan and "golden" not in plan
    assert "unchanged: ingest, validate, preprocess" in plan
    third = mlops("run", cwd=repo).stdout
    assert RAN.findall(third) == ["train", "evaluate", "register"]
    assert len(_registry(repo)) == 2


def test_failing_validation_stops_before_a_model_is_registered(repo: Path) -> None:
    _example(repo)
    spec = repo / "mlops.yaml"
    spec.write_text(spec.read_text().replace("min: 0, max: 100,", "min: 0, max: 10,"))
    proc = mlops("run", cwd=repo, check=False)
    assert proc.returncode == 1
    assert "stage 'validate' failed" in proc.stderr
    assert re.search(r"column 'mean radius'.*max", proc.stdout)
    assert not (repo / "artifacts/train").exists()
    assert not (repo / "artifacts/register").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend."""
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination", str(store / "artifacts"),
        ],
        cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=quiet_env(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_pipeline_against_a_tracking_server(
    repo: Path, tracking_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _example(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    mlops("run", cwd=repo)
    versions = _registry(repo, tracking_server)
    assert len(versions) == 1 and versions[0]["aliases"] == ["candidate"]
    assert not (
        repo / ".mlops" / "mlflow.db"
    ).exists()  # nothing went to the local store


def test_a_copy_of_the_shared_run_stands_alone(
    example_run: ExampleRun, tmp_path: Path
) -> None:
    """What tests/conftest.py's example_run promises: a copy has its own store."""
    first = example_run.copy(tmp_path / "first")
    second = copy_run(first, tmp_path / "second")
    shutil.rmtree(first)  # a copy of a copy outlives it
    assert traces_of(second, example_run.root) == []
    assert traces_of(second, first) == []
    plan = mlops("plan", cwd=second).stdout
    assert plan.splitlines()[0] == "0 of 6 stages would run:", plan
    probe = (
        "import json, os, tempfile, mlflow\n"
        "mlflow.set_tracking_uri('sqlite:///.mlops/mlflow.db')\n"
        "c = mlflow.MlflowClient()\n"
        "v = c.get_model_version('cancer-classifier', '1')\n"
        "model = c.get_logged_model(v.source.removeprefix('models:/'))\n"
        "run = c.get_run(v.run_id)\n"
        "experiment = c.get_experiment(run.info.experiment_id)\n"
        "got = mlflow.artifacts.download_artifacts(\n"
        "    artifact_uri='models:/cancer-classifier/1', dst_path=tempfile.mkdtemp())\n"
        "c.set_registered_model_alias('cancer-classifier', 'production', '1')\n"
        "print(json.dumps([model.artifact_location, run.info.artifact_uri,\n"
        "    experiment.artifact_location, sorted(os.listdir(got))]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=second, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    *locations, files = json.loads(proc.stdout.splitlines()[-1])
    assert all(str(u).startswith(f"{second.as_uri()}/.mlops/") for u in locations)
    assert "MLmodel" in files
    assert sorted(_registry(second)[0]["aliases"]) == ["candidate", "production"]
    # The alias set in the copy is not in the session's run, nor in a new copy.
    third = example_run.copy(tmp_path / "third")
    assert _registry(third)[0]["aliases"] == ["candidate"]
