"""`mlops push` and `mlops run --pull`: a run restored on another checkout, for real.

Every output holds a random token, so a stage that ran again shows up as a
different file, not only in DVC's log.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import dvc, mlops, quiet_env, run

SPEC = """\
version: 1
project: {{name: toy, task: regression, target: y}}
storage:
  remote: {{url: {remote}}}
pipeline:
  make:
    run: python scripts/make.py
    deps: [scripts/make.py, input.txt]
    outs: [data/a.txt]
    metrics: [make.json]
  report:
    run: python scripts/report.py
    deps: [scripts/report.py]
    needs: [make]
    metrics: [report.json]
    plots: [plots]
"""
MAKE = """\
import json, pathlib, uuid
pathlib.Path("data").mkdir(exist_ok=True)
pathlib.Path("data/a.txt").write_text(pathlib.Path("input.txt").read_text() + uuid.uuid4().hex)
json.dump({"token": uuid.uuid4().hex}, open("make.json", "w"))
"""
REPORT = """\
import json, pathlib, uuid
pathlib.Path("plots").mkdir(exist_ok=True)
pathlib.Path("plots/p.csv").write_text("x,y\\n1," + str(len(uuid.uuid4().hex)) + "\\n")
pathlib.Path("plots/token.txt").write_text(uuid.uuid4().hex)
data = pathlib.Path("data/a.txt").read_text()
json.dump({"token": uuid.uuid4().hex, "data": data}, open("report.json", "w"))
"""
OUTPUTS = ("data/a.txt", "make.json", "report.json", "plots/p.csv", "plots/token.txt")


def _ran(out: str) -> list[str]:
    return re.findall(r"\] (\S+): running", out)


def _restored(out: str) -> list[str]:
    return re.findall(r"\] (\S+): restored from the run-cache", out)


def _outputs(root: Path) -> dict[str, str]:
    return {p: (root / p).read_text() for p in OUTPUTS}


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, Path]:
    """A repository whose first commit has the sources and no run yet."""
    root, remote = tmp_path / "origin", tmp_path / "remote"
    (root / "scripts").mkdir(parents=True)
    (root / "mlops.yaml").write_text(SPEC.format(remote=remote))
    (root / "scripts" / "make.py").write_text(MAKE)
    (root / "scripts" / "report.py").write_text(REPORT)
    (root / "input.txt").write_text("3")
    run(["git", "init", "-q", "-b", "main"], cwd=root)
    mlops("compile", cwd=root)
    dvc("init", "-q", cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "sources"], cwd=root)
    first = mlops("run", cwd=root).stdout
    assert _ran(first) == ["make", "report"]
    return root, remote


def _clone(origin: Path, to: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(to)], cwd=origin.parent)
    return to


def test_another_checkout_restores_every_stage_instead_of_running_it(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = origin
    pushed = mlops("push", cwd=root).stdout
    assert "git-kept output file(s) of 2 stage run(s)" in pushed

    other = _clone(root, tmp_path / "other")
    out = mlops("run", "--pull", cwd=other).stdout
    assert _ran(out) == [], out
    assert _restored(out) == ["make", "report"]
    assert _outputs(other) == _outputs(root)
    # What it wrote in dvc.lock is what the first checkout ran.
    assert (other / "dvc.lock").read_text() == (root / "dvc.lock").read_text()


def test_a_committed_run_is_pulled_or_run_again_when_the_remote_lacks_it(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    root, remote = origin
    mlops("push", cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "record the run"], cwd=root)
    pulled = _clone(root, tmp_path / "pulled")
    out = mlops("run", "--pull", cwd=pulled).stdout
    assert _ran(out) == _restored(out) == [], out
    assert "2 unchanged" in out
    assert _outputs(pulled) == _outputs(root)

    # A fresh remote (the template's first pull request): it runs instead.
    shutil.rmtree(remote)
    fresh = _clone(root, tmp_path / "fresh")
    out = mlops("run", "--pull", cwd=fresh).stdout
    assert _ran(out) == ["make", "report"], out
    assert "2 stages, 2 ran, 0 unchanged" in out  # a failed pull is not unchanged


def test_plain_dvc_push_leaves_git_kept_outputs_behind(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    # Why `mlops push` exists (DVC 3.67): if DVC ever uploads them itself,
    # this fails and runner/runcache.py can go.
    root, _ = origin
    dvc("push", "--run-cache", "-q", cwd=root)
    other = _clone(root, tmp_path / "other")
    out = mlops("run", "--pull", cwd=other).stdout
    assert _ran(out) == ["make", "report"], out
    assert _outputs(other)["report.json"] != _outputs(root)["report.json"]


def test_push_one_stage_and_name_errors(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = origin
    assert "of 1 stage run(s)" in mlops("push", "make", cwd=root).stdout
    other = _clone(root, tmp_path / "other")
    out = mlops("run", "--pull", cwd=other).stdout
    assert _restored(out) == ["make"] and _ran(out) == ["report"], out

    bad = mlops("push", "nope", cwd=root, check=False)
    assert bad.returncode == 1
    assert "no stage named 'nope' in dvc.yaml (stages: make, report)" in bad.stderr


# Argo tasks, run as the pods would run them: each in an empty folder of its
# own, with the script and environment of the generated manifest.


def _argo_tasks(root: Path) -> list[tuple[str, str, dict[str, str]]]:
    from runner import compile as compiler
    from runner import spec as specs
    from runner.targets import argo

    rendered = compiler.render(specs.load(root / "mlops.yaml"))
    manifest = yaml.safe_load(rendered[argo.TEMPLATE_FILE])
    templates = {t["name"]: t for t in manifest["spec"]["templates"]}
    tasks = []
    for task in templates[argo.ENTRYPOINT]["dag"]["tasks"]:
        container = templates[task["template"]]["container"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        tasks.append((task["name"], container["args"][0], env))
    return tasks


def _pod(
    root: Path, pods: Path, task: tuple[str, str, dict[str, str]]
) -> subprocess.CompletedProcess[str]:
    """Run one task's script in a fresh folder, parameters filled in as Argo does."""
    from runner.targets import argo

    name, script, env = task
    params = {
        argo.workflow_param(argo.P_REPO): str(root),
        argo.workflow_param(argo.P_REVISION): run(
            ["git", "rev-parse", "HEAD"], cwd=root
        ).stdout.strip(),
    }
    workspace = pods / name
    workspace.mkdir(parents=True)
    assert f"cd {argo.WORKSPACE}\n" in script
    script = script.replace(f"cd {argo.WORKSPACE}\n", f"cd {workspace}\n")
    pod_env = {**quiet_env(), **{k: params.get(v, v) for k, v in env.items()}}
    pod_env["HOME"] = str(workspace)
    return run(["sh", "-c", script], cwd=workspace, env=pod_env)


def _dvc_ran(log: str) -> list[str]:
    return re.findall(r"^Running stage '([^']+)'", log, re.MULTILINE)


def _dvc_restored(log: str) -> list[str]:
    return re.findall(r"^Stage '([^']+)' is cached - skipping run", log, re.MULTILINE)


def test_each_argo_task_restores_its_upstream_and_runs_only_its_stage(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = origin
    make, report = _argo_tasks(root)
    first = _pod(root, tmp_path / "pods", make).stdout
    assert _dvc_ran(first) == ["make"]
    second = _pod(root, tmp_path / "pods", report).stdout
    assert _dvc_restored(second) == ["make"] and _dvc_ran(second) == ["report"]
    made = tmp_path / "pods" / "make" / "repo"
    reported = tmp_path / "pods" / "report" / "repo"
    assert (reported / "data/a.txt").read_text() == (made / "data/a.txt").read_text()

    # Recording the cluster run in git recomputes nothing.
    other = _clone(root, tmp_path / "other")
    out = mlops("run", "--pull", cwd=other).stdout
    assert _ran(out) == [] and _restored(out) == ["make", "report"], out
    assert _outputs(other)["report.json"] == (reported / "report.json").read_text()


def test_argo_tasks_recompute_nothing_ci_already_ran(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = origin
    mlops("push", cwd=root)
    for task in _argo_tasks(root):
        log = _pod(root, tmp_path / "pods", task).stdout
        assert _dvc_ran(log) == [], log
    pod = tmp_path / "pods" / "report" / "repo"
    assert _outputs(pod) == _outputs(root)

    # With that run's dvc.lock committed, each task skips its stage, pulls
    # nothing it does not need, and its push still succeeds.
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "record the run"], cwd=root)
    for task in _argo_tasks(root):
        log = _pod(root, tmp_path / "pods-after", task).stdout
        assert f"Stage '{task[0]}' didn't change, skipping" in log, log
        assert _dvc_ran(log) == _dvc_restored(log) == [], log
