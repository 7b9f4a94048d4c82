"""`mlops promote`, `history` and `deploy` on the bundled example, for real.

One temp git repository per module: a copy of the session's cold run of the
example (tests/conftest.py), then the pipeline runs again with a changed spec
(a better candidate, then a worse one, then the better one back), and each
test picks up where the previous one left off, like a series of pushes to main.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runner import release
from stages import audit, common, modelfile, promote
from tests.conftest import ExampleRun
from tests.support import ROOT, TEST_ENV, mlops, run

MODEL = "cancer-classifier"
ENV = {**TEST_ENV, "GITHUB_ACTOR": "octocat"}
RF = "estimator: sklearn.ensemble.RandomForestClassifier"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, example_run: ExampleRun) -> Path:
    """The example, committed and run once: version 1 is @candidate."""
    return example_run.copy(tmp_path_factory.mktemp("promote") / "repo")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


def _commit(root: Path, message: str) -> None:
    run(["git", "add", "-A", "mlops.yaml", "stages"], cwd=root)
    run(["git", "commit", "-qm", message], cwd=root)


def _edit(root: Path, old: str, new: str, message: str) -> None:
    spec = root / "mlops.yaml"
    text = spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new))
    _commit(root, message)
    mlops("run", cwd=root)


def _client(root: Path) -> Any:
    """The repository's registry, read and written from this process (one import
    of MLflow for the module instead of one per look-up)."""
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{root}/.mlops/mlflow.db")


def _aliases(root: Path) -> dict[str, str]:
    aliases = _client(root).get_registered_model(MODEL).aliases
    return {k: str(v) for k, v in aliases.items()}


def _log(root: Path) -> list[dict[str, object]]:
    lines = (root / audit.LOG_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def _tags(root: Path) -> list[str]:
    return run(["git", "tag"], cwd=root).stdout.split()


def test_first_candidate_is_promoted_with_an_audit_entry_and_a_git_tag(
    repo: Path,
) -> None:
    assert _aliases(repo) == {"candidate": "1"}
    out = mlops("promote", cwd=repo).stdout
    assert "promoted cancer-classifier version 1 to @production" in out
    assert _aliases(repo) == {"candidate": "1", "production": "1"}
    [entry] = _log(repo)
    head = run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip()
    assert entry["outcome"] == "promoted" and entry["version"] == "1"
    assert entry["previous"] is None and entry["actor"] == "octocat"
    assert entry["train_commit"] == head == entry["head_commit"]
    assert entry["train_changes"] is None  # trained from the commit as it is
    assert len(str(entry["data_md5"])) == 32
    assert entry["params"]["n_estimators"] == "200"  # type: ignore[index]
    assert _tags(repo) == ["cancer-classifier@v1"]
    again = mlops("promote", cwd=repo).stdout
    assert "registered by this commit, is already @production" in again
    assert len(_log(repo)) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_deploy_serves_the_production_model_over_http(repo: Path) -> None:
    import pandas as pd

    from stages import common

    port = _free_port()
    env = {**os.environ, release.PORT_ENV: str(port)}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "deploy", "--timeout", "90"],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if "Ctrl-C stops it" in line or ("deploy: " in line and "error" in line):
                break
        assert any("smoke test" in s for s in seen), "".join(seen)
        test = pd.read_parquet(repo / "artifacts/preprocess/test.parquet")
        x = test.drop(columns=["target"]).head(20)
        body = json.dumps(
            {"dataframe_split": json.loads(x.to_json(orient="split", index=False))}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310
            served = json.loads(r.read())["predictions"]
        params = common.load_params(repo / "params.yaml")
        model = modelfile.load_model_dir(
            repo / "artifacts/train/model", common.project_allow(params)
        )
        assert served == [int(p) for p in model.predict(x)]
    finally:
        proc.send_signal(signal.SIGTERM)  # the CLI passes it on; the server stops
        rest, _ = proc.communicate(timeout=60)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 2):
        pass
    assert "deploy: stopped" in rest


def test_a_failure_before_the_alias_moves_leaves_production_alone(
    repo: Path,
) -> None:
    _edit(repo, "n_estimators: 200", "n_estimators: 300", "more trees")
    assert _aliases(repo) == {"candidate": "2", "production": "1"}
    inject = (
        "from stages import audit, promote\n"
        "def boom(**kwargs):\n"
        "    raise RuntimeError('injected between scoring and the alias move')\n"
        "audit.build_entry = boom\n"
        "raise SystemExit(promote.main([]))\n"
    )
    proc = run([sys.executable, "-c", inject], cwd=repo, check=False)
    assert proc.returncode != 0 and "injected" in proc.stderr
    assert "gate PASS" in proc.stdout  # it did score both models first
    assert _aliases(repo) == {"candidate": "2", "production": "1"}
    assert len(_log(repo)) == 1


def test_a_better_candidate_is_promoted(repo: Path) -> None:
    out = mlops("promote", cwd=repo).stdout
    assert "promoted cancer-classifier version 2 to @production (was version 1)" in out
    assert _aliases(repo) == {"candidate": "2", "production": "2"}
    entry = _log(repo)[-1]
    assert entry["previous"] == "1" and entry["new_production"] == "2"
    assert entry["metrics"]["production"] is not None  # type: ignore[index]
    assert sorted(_tags(repo)) == ["cancer-classifier@v1", "cancer-classifier@v2"]


def test_promote_takes_this_commits_version_not_whatever_holds_candidate(
    repo: Path,
) -> None:
    # Another pull request moved @candidate back to version 1 meanwhile.
    _client(repo).set_registered_model_alias(MODEL, "candidate", "1")
    again = mlops("promote", cwd=repo).stdout
    assert "version 2, registered by this commit, is already @production" in again
    assert _aliases(repo) == {"candidate": "1", "production": "2"}
    assert len(_log(repo)) == 2


def test_a_worse_model_is_never_a_candidate_and_promote_refuses_it(
    repo: Path,
) -> None:
    _edit(
        repo,
        f"{RF}\n      params:\n        n_estimators: 300\n        max_depth: 6",
        "estimator: sklearn.dummy.DummyClassifier\n      params: {strategy: prior}",
        "a model that learns nothing",
    )
    assert _aliases(repo) == {"candidate": "1", "production": "2"}
    proc = mlops("promote", cwd=repo, check=False)
    assert proc.returncode == 1
    assert "refused: version 3, registered by this commit's run" in proc.stderr
    assert "failed its gates (accuracy.min" in proc.stderr
    assert "production stays at version 2" in proc.stderr
    assert _aliases(repo) == {"candidate": "1", "production": "2"}
    entry = _log(repo)[-1]
    assert entry["outcome"] == "refused" and entry["version"] == "3"
    assert entry["new_production"] == "2" and entry["gates_passed"] is False


def test_history_answers_which_model_served_when(repo: Path) -> None:
    rows = mlops("history", cwd=repo).stdout.splitlines()
    assert rows[0].split()[:3] == ["date", "(UTC)", "outcome"]
    assert [r.split()[3] for r in rows[1:]] == ["v1", "v2"]
    entries = [
        json.loads(line)
        for line in mlops("history", "--all", "--json", cwd=repo).stdout.splitlines()
    ]
    assert [(e["outcome"], e["version"]) for e in entries] == [
        ("promoted", "1"),
        ("promoted", "2"),
        ("refused", "3"),
    ]
    first = entries[0]["time"]
    at_first = mlops("history", "--at", first, cwd=repo).stdout
    assert f"{MODEL} version 1 was in production" in at_first
    assert f"code: commit {entries[0]['train_commit']}" in at_first
    today = datetime.now(UTC).date().isoformat()
    assert (
        "version 2 was in production"
        in mlops("history", "--at", today, cwd=repo).stdout
    )
    before = mlops("history", "--at", "2000-01-01", cwd=repo, check=False)
    assert before.returncode == 1 and "no version" in before.stderr


def _release(root: Path) -> dict[str, str]:
    return json.loads((root / "deploy" / "production" / "release.json").read_text())


def _set_production(root: Path, version: str) -> None:
    _client(root).set_registered_model_alias(MODEL, "production", version)


def test_promote_recorded_the_release_in_deploy_and_the_check_agrees(
    repo: Path,
) -> None:
    # Promoting version 2 (above) wrote what git must say serves.
    release_record = _release(repo)
    assert release_record["model"] == MODEL and release_record["version"] == "2"
    assert release_record["run_id"]
    ok = mlops("release", "--check", cwd=repo)
    assert "agree: cancer-classifier version 2" in ok.stdout
    assert (
        "already names cancer-classifier version 2" in mlops("release", cwd=repo).stdout
    )


def test_an_alias_moved_by_hand_fails_the_release_check(repo: Path) -> None:
    _set_production(repo, "1")
    try:
        proc = mlops("release", "--check", cwd=repo, check=False)
        assert proc.returncode == 1
        assert "deploy/production/ names cancer-classifier version 2" in proc.stderr
        assert "production alias names cancer-classifier version 1" in proc.stderr
    finally:
        _set_production(repo, "2")
    assert _release(repo)["version"] == "2"  # the check wrote nothing


def test_rollback_goes_back_to_the_version_before_in_registry_and_git(
    repo: Path,
) -> None:
    out = mlops("rollback", cwd=repo).stdout
    assert (
        "rolled cancer-classifier @production back from version 2 to version 1" in out
    )
    assert _aliases(repo)["production"] == "1"
    assert _release(repo)["version"] == "1"
    assert "deploy/production/ now names cancer-classifier version 1 (was" in out
    entry = _log(repo)[-1]
    assert (entry["outcome"], entry["version"], entry["previous"]) == (
        "rolled-back", "1", "2",
    )  # fmt: skip
    assert entry["new_production"] == "1" and entry["actor"] == "octocat"
    assert any(t.startswith("cancer-classifier@v1-rollback-") for t in _tags(repo))
    assert mlops("release", "--check", cwd=repo).returncode == 0
    now = datetime.now(UTC).isoformat()
    assert (
        "version 1 was in production" in mlops("history", "--at", now, cwd=repo).stdout
    )
    # Version 1 was the first promoted: nothing is known before it.
    proc = mlops("rollback", cwd=repo, check=False)
    assert proc.returncode == 1 and "pass --to VERSION" in proc.stderr
    proc = mlops("rollback", "--to", "99", cwd=repo, check=False)
    assert proc.returncode == 1 and "has no version 99" in proc.stderr
    assert _aliases(repo)["production"] == "1"


def test_a_rolled_back_version_is_not_promoted_again_by_a_later_merge(
    repo: Path,
) -> None:
    # Back to the commit that registered version 2: the run is restored, the
    # record names version 2 again, and promote must not undo the rollback.
    _edit(
        repo,
        "estimator: sklearn.dummy.DummyClassifier\n      params: {strategy: prior}",
        f"{RF}\n      params:\n        n_estimators: 300\n        max_depth: 6",
        "back to the forest",
    )
    registered = json.loads((repo / "artifacts/register/registered.json").read_text())
    assert registered["version"] == "2"
    proc = mlops("promote", cwd=repo, check=False)
    assert proc.returncode == 1
    assert "version 2 was rolled back from production" in proc.stderr
    assert _aliases(repo)["production"] == "1" and _release(repo)["version"] == "1"
    out = mlops("rollback", "--to", "2", cwd=repo).stdout
    assert "back from version 1 to version 2" in out
    assert _release(repo)["version"] == "2"


def test_a_model_trained_from_uncommitted_changes_says_so_and_is_not_tagged(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A local experiment: a stage's code edited, run and promoted, not committed.
    head = run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip()
    code = repo / "stages" / "train.py"
    code.write_text(code.read_text() + "\n# trying something\n")
    mlops("run", cwd=repo)
    record = json.loads((repo / "artifacts/train/run.json").read_text())
    assert record["git_commit"] == head and record["git_dirty"] is True
    assert record["git_changes"] == "stages/train.py"
    proc = mlops("promote", cwd=repo)
    assert "promoted cancer-classifier version 4" in proc.stdout
    assert (
        "version 4 was trained with uncommitted changes to stages/train.py on top "
        f"of commit {head}" in proc.stderr
    )
    assert (
        "no git tag cancer-classifier@v4: uncommitted changes to stages/train.py"
        in (proc.stdout)
    )
    assert "cancer-classifier@v4" not in _tags(repo)
    before = _log(repo)
    entry = before[-1]
    assert entry["train_commit"] == head and entry["train_changes"] == "stages/train.py"
    version = _client(repo).get_model_version(MODEL, "4")
    assert version.tags["mlops.git_dirty"] == "true"
    assert (
        _client(repo).get_model_version(MODEL, "2").tags["mlops.git_dirty"] == "false"
    )
    [row] = [r for r in mlops("history", cwd=repo).stdout.splitlines() if " v4 " in r]
    assert f"{head[:8]}-dirty" in row
    at = mlops("history", "--at", str(entry["time"]), cwd=repo).stdout
    assert f"code: commit {head}, with uncommitted changes to stages/train.py" in at
    # Committed, HEAD alone makes the model again: nothing stands in the tag's way.
    monkeypatch.chdir(repo)
    registered = "artifacts/register/registered.json"
    assert common.git_changes(registered) == ["stages/train.py"]
    run(["git", "commit", "-qam", "the experiment"], cwd=repo)
    assert common.git_changes(registered) == []
    again = mlops("promote", cwd=repo).stdout
    assert "version 4, registered by this commit, is already @production" in again
    assert "tagged HEAD cancer-classifier@v4" in again
    assert "cancer-classifier@v4" in _tags(repo) and len(_log(repo)) == len(before)


def test_promote_before_a_run_is_an_error(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copy(ROOT / "mlops.yaml", tmp_path / "mlops.yaml")
    mlops("compile", cwd=tmp_path)
    proc = mlops("promote", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "artifacts/register/registered.json is missing: run `mlops run`" in (
        proc.stderr
    )


def test_a_version_from_another_registry_is_an_error(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copy(ROOT / "mlops.yaml", tmp_path / "mlops.yaml")
    mlops("compile", cwd=tmp_path)
    record = {"model": MODEL, "version": "7", "run_id": "abc", "gates_passed": True}
    (tmp_path / "artifacts" / "register").mkdir(parents=True)
    (tmp_path / "artifacts" / "register" / "registered.json").write_text(
        json.dumps(record)
    )
    proc = mlops("promote", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "cancer-classifier version 7 (artifacts/register/registered.json) is " in (
        proc.stderr
    )
    assert "registered in another MLflow store" in proc.stderr


# Pure helpers: no MLflow, no processes.


def test_deploy_is_written_from_the_line_the_module_wrote_and_none_is_a_fault(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from runner import gitops
    from runner.errors import RunError

    calls: list[list[str]] = []
    lines = ['{"model": "m", "version": "3", "run_id": "r"}\n', None]

    def module(root: Path, name: str, argv: list[str]) -> int:
        calls.append([name, *argv])
        line = lines.pop(0)
        if line is not None:
            Path(argv[-1]).write_text(line)
        return 0

    synced: list[object] = []
    monkeypatch.setattr(release, "run_module", module)
    monkeypatch.setattr(
        gitops, "write", lambda root, spec, say, wanted: synced.append(wanted)
    )
    monkeypatch.setattr(gitops, "production", lambda root: pytest.fail("asked again"))
    gitops.after(tmp_path, None, print, "rollback", ["--to", "3"])  # type: ignore[arg-type]
    assert calls[0][:4] == ["rollback", "--to", "3", release.RELEASE_FLAG]
    assert synced == [gitops.deploy_state.Release(model="m", version="3", run_id="r")]
    # Exit 0 and no line: a fault, never "no version holds the alias".
    with pytest.raises(RunError, match="exited 0 and wrote '', not one JSON line"):
        gitops.after(tmp_path, None, print, "promote", [])  # type: ignore[arg-type]
    assert synced == [synced[0]]


def test_parse_when_reads_a_date_as_the_end_of_that_day() -> None:
    assert audit.parse_when("2025-01-31") == datetime(
        2025, 1, 31, 23, 59, 59, 999999, tzinfo=UTC
    )
    assert audit.parse_when("2025-01-31T10:00") == datetime(2025, 1, 31, 10, tzinfo=UTC)
    assert audit.parse_when("2025-01-31T10:00+02:00").hour == 8
    with pytest.raises(promote.common.StageError, match="not a date"):
        audit.parse_when("last tuesday")


def test_serving_at_skips_refusals_and_later_promotions() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    entries = [
        {"time": (t0 + timedelta(days=d)).isoformat(), "outcome": o, "version": v}
        for d, o, v in [(0, "promoted", "1"), (2, "refused", "2"), (3, "promoted", "3")]
    ]
    assert audit.serving_at(entries, t0 - timedelta(seconds=1)) is None
    assert audit.serving_at(entries, t0)["version"] == "1"  # type: ignore[index]
    assert audit.serving_at(entries, t0 + timedelta(days=2))["version"] == "1"  # type: ignore[index]
    assert audit.serving_at(entries, t0 + timedelta(days=9))["version"] == "3"  # type: ignore[index]


def test_read_entries_orders_by_time_and_ignores_foreign_tags() -> None:
    tags = {
        "mlops.audit.b": json.dumps({"time": "2025-01-02T00:00:00+00:00"}),
        "mlops.audit.a": json.dumps({"time": "2025-01-01T00:00:00+00:00"}),
        "mlops.audit.broken": "{not json",
        "owner": "me",
    }
    assert [e["time"][:10] for e in audit.read_entries(tags)] == [
        "2025-01-01",
        "2025-01-02",
    ]


def test_tag_verdicts_and_metrics_come_from_register_tags() -> None:
    tags = {
        "mlops.gates_passed": "false",
        "gate.accuracy.min": "fail",
        "gate.f1.max_drop": "pass",
        "metric.accuracy": "0.62",
    }
    verdicts = promote.tag_verdicts(tags)
    assert verdicts["passed"] is False
    assert {(g["metric"], g["passed"]) for g in verdicts["gates"]} == {
        ("accuracy", False),
        ("f1", True),
    }
    assert promote.tag_metrics(tags) == {"accuracy": 0.62}


def test_deploy_port_comes_from_flag_then_env_then_spec() -> None:
    from argparse import Namespace

    from runner import spec as specs

    args = Namespace(
        host=None, port=None, workers=None, prediction_log=None, timeout=5.0,
        check_only=True,
    )  # fmt: skip
    spec = specs.load(ROOT / "mlops.yaml").deploy  # the schema's defaults filled
    argv = release.deploy_args(args, spec, {})
    assert argv[:4] == ["--host", "127.0.0.1", "--port", "5001"]
    assert dict(zip(argv[4:16:2], argv[5:16:2], strict=True)) == {
        "--workers": "1",
        "--max-request-bytes": "1048576",
        "--log-dir": ".mlops/predictions",
        "--log-sample": "1",
        "--log-max-bytes": "104857600",
        "--log-backups": "10",
    }
    assert release.deploy_args(args, spec, {release.PORT_ENV: "7000"})[3] == "7000"
    args.port = 7100
    assert release.deploy_args(args, spec, {release.PORT_ENV: "7000"})[3] == "7100"
    assert release.deploy_args(args, spec, {})[-1] == "--check-only"
    for target in ("local", "kubernetes", "kserve"):  # all serve with mlops serve
        assert release.deploy_args(args, {**spec, "target": target}, {})
    with pytest.raises(release.RunError, match="'mlflow-serve' is not supported"):
        release.deploy_args(args, {**spec, "target": "mlflow-serve"}, {})


def test_deploy_refuses_a_model_that_trusts_more_than_the_allow_list(
    tmp_path: Path,
) -> None:
    import yaml

    from stages import common

    flavor = {
        "pickled_model": "model.skops",
        "serialization_format": "skops",
        "skops_trusted_types": ["numpy.dtype", "os.system"],
    }
    (tmp_path / "MLmodel").write_text(yaml.safe_dump({"flavors": {"sklearn": flavor}}))
    with pytest.raises(common.StageError, match=r"outside the allow-list: os\.system"):
        modelfile.check_mlmodel(tmp_path, common.TRUSTED_MODULE_PREFIXES)


def test_base_url_reaches_a_wildcard_host_on_loopback() -> None:
    from stages import deploy

    assert deploy.base_url("0.0.0.0", 80) == "http://127.0.0.1:80"  # noqa: S104
    assert deploy.base_url("::1", 80) == "http://[::1]:80"
