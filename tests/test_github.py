"""The GitHub Actions target: real validators and the hardening rules, per case.

The cases are this repository's spec, every spec under tests/golden/ and every
bundled example under examples/ (compiled in installed mode, as a team's
repository compiles it). Each generated workflow goes through zizmor (offline, pedantic persona), the
GitHub workflow JSON schema (check-jsonschema) and actionlint, and must draw no
finding; a deliberately bad workflow proves each validator's wiring catches one.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner import compile as compiler
from runner import spec as specs
from runner import write
from runner.targets import github, pins
from tests.installed import golden_framework
from tests.support import REFERENCE, ROOT, run

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "mlops.yaml").exists())
# The bundled examples (examples/*/mlops.yaml) are compiled as a team that
# installed the framework compiles them.
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/mlops.yaml"))
SPECS = (
    {"repository": ROOT / "mlops.yaml"}
    | {case: GOLDEN / case / "mlops.yaml" for case in CASES}
    | {f"examples/{name}": ROOT / "examples" / name / "mlops.yaml" for name in EXAMPLES}
)
# Every tag of each pinned action and its commit (see tests/reference/README.md).
TAGS_TABLE = REFERENCE / "github-actions-tags.json"
USES_LINE = re.compile(r"^\s*(?:- )?uses: (?P<ref>\S+)(?P<rest>.*)$")
PINNED = re.compile(r"^(?P<action>[^@\s]+)@(?P<commit>[0-9a-f]{40}) # (?P<tag>\S+)$")
# Jobs allowed a write permission, and which ones.
WRITERS = {
    github.PULL_REQUEST_FILE: {"run": {"pull-requests"}},
    # None: the retraining branch and pull request are pushed and opened with
    # ci.retrain_token (a pull request opened by GITHUB_TOKEN starts no checks).
    github.MONITOR_FILE: {"monitor": set()},
    # Commits deploy/<environment>/ to main, in the protected environment only.
    github.MAIN_FILE: {"deploy": {"contents"}},
}

BAD_WORKFLOW = """\
name: bad
on:
  pull_request_target:
jobs:
  build:
    runs-on: ubuntu-24.04
    needs: missing-job
    steps:
      - uses: actions/checkout@v4
        with:
          ref: ${{ github.event.pull_request.head.sha }}
      - run: echo "${{ github.event.pull_request.title }}"
"""
SCHEMA_INVALID_WORKFLOW = """\
name: bad
on: push
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - name: neither uses nor run
        with-typo: 1
"""


def test_every_example_is_a_case() -> None:
    """An example folder without a spec would drop out of every check here."""
    folders = sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir())
    assert folders and folders == EXAMPLES


def _tool(name: str) -> str:
    """A validator installed beside this interpreter (the dev extras)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(
        name
    )
    if found is None:
        pytest.fail(
            f"{name} is not installed: pip install -c constraints.txt -e '.[dev]'"
        )
    return found


def _rendered(name: str) -> dict[str, str]:
    spec = specs.load(SPECS[name])
    case = "installed" if name.startswith("examples/") else name
    files = compiler.render(
        spec, framework=golden_framework(case, spec.ci.get("install"))
    )
    return {p: t for p, t in files.items() if p.startswith(github.WORKFLOWS + "/")}


def _written(name: str, root: Path) -> list[Path]:
    paths = []
    for rel, text in _rendered(name).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        paths.append(root / rel)
    return sorted(paths)


def _bad(root: Path, text: str) -> Path:
    path = root / ".github" / "workflows" / "bad.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _zizmor(paths: list[Path]) -> Any:
    return run(
        [_tool("zizmor"), "--offline", "--no-config", "--persona=pedantic",
         "--format=plain", *map(str, paths)],
        cwd=ROOT, check=False,
    )  # fmt: skip


def _schema(paths: list[Path]) -> Any:
    return run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
         "--output-format", "json", *map(str, paths)],
        cwd=ROOT, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def schema_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Each case's errors from GitHub's workflow schema, by file: one
    check-jsonschema over every case's workflows (it takes 1 s to start)."""
    root = tmp_path_factory.mktemp("schema")
    owner = {
        str(path): name
        for i, name in enumerate(sorted(SPECS))
        for path in _written(name, root / str(i))
    }
    assert set(owner.values()) == set(SPECS)
    proc = _schema([Path(p) for p in owner])
    result = json.loads(proc.stdout)
    errors: dict[str, list[str]] = {name: [] for name in SPECS}
    for error in [*result.get("errors", []), *result.get("parse_errors", [])]:
        where = f"{Path(error['filename']).name} {error.get('path', '')}"
        errors[owner[error["filename"]]].append(f"{where}: {error['message']}")
    # Every failure is one of a file's, or the exit code would say otherwise.
    assert (proc.returncode == 0) == (not any(errors.values())), _report(proc)
    return errors


def _actionlint(paths: list[Path]) -> Any:
    return run(
        [_tool("actionlint"), "-no-color", "-config-file", "/dev/null",
         *map(str, paths)],
        cwd=ROOT, check=False,
    )  # fmt: skip


def _report(proc: Any) -> str:
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def _workflows(name: str) -> dict[str, dict[Any, Any]]:
    return {rel: yaml.safe_load(text) for rel, text in _rendered(name).items()}


def _steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


# -- the validators ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_zizmor_finds_nothing(name: str, tmp_path: Path) -> None:
    proc = _zizmor(_written(name, tmp_path))
    assert proc.returncode == 0, _report(proc)
    assert "No findings to report" in proc.stdout, _report(proc)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_workflow_schema_accepts(
    name: str, schema_errors: dict[str, list[str]]
) -> None:
    assert schema_errors[name] == []


@pytest.mark.parametrize("name", sorted(SPECS))
def test_actionlint_finds_nothing(name: str, tmp_path: Path) -> None:
    proc = _actionlint(_written(name, tmp_path))
    assert proc.returncode == 0, _report(proc)
    assert proc.stdout == "", _report(proc)


def test_zizmor_catches_a_bad_workflow(tmp_path: Path) -> None:
    proc = _zizmor([_bad(tmp_path, BAD_WORKFLOW)])
    assert proc.returncode != 0, _report(proc)
    for audit in ("dangerous-triggers", "template-injection", "unpinned-uses"):
        assert audit in proc.stdout, _report(proc)


def test_workflow_schema_catches_a_bad_workflow(tmp_path: Path) -> None:
    proc = _schema([_bad(tmp_path, SCHEMA_INVALID_WORKFLOW)])
    assert proc.returncode != 0, _report(proc)
    assert json.loads(proc.stdout)["errors"], _report(proc)


def test_actionlint_catches_a_bad_workflow(tmp_path: Path) -> None:
    proc = _actionlint([_bad(tmp_path, BAD_WORKFLOW)])
    assert proc.returncode != 0, _report(proc)
    assert "missing-job" in proc.stdout, _report(proc)


# -- the hardening rules -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_action_is_pinned_to_a_commit_of_its_tag(name: str) -> None:
    table = json.loads(TAGS_TABLE.read_text())["actions"]
    for rel, text in _rendered(name).items():
        for line in text.splitlines():
            uses = USES_LINE.match(line)
            if uses is None:
                continue
            pinned = PINNED.match(uses["ref"] + uses["rest"])
            assert pinned, f"{rel}: not pinned as `action@commit # tag`: {line}"
            tags = table.get(pinned["action"], {})
            assert tags.get(pinned["tag"]) == pinned["commit"], (
                f"{rel}: {pinned['action']} {pinned['tag']} is not commit "
                f"{pinned['commit']} in {TAGS_TABLE.name}"
            )


def test_pins_match_the_reference_table() -> None:
    table = json.loads(TAGS_TABLE.read_text())["actions"]
    for pin in pins.PINS:
        assert table[pin.action][pin.tag] == pin.commit, pin
        releases = [t for t in table[pin.action] if re.fullmatch(r"v\d+\.\d+\.\d+", t)]
        newest = max(releases, key=lambda t: tuple(int(n) for n in t[1:].split(".")))
        assert pin.tag == newest, f"{pin.action}: {newest} is newer than {pin.tag}"


def test_the_copied_table_has_every_pinned_action() -> None:
    table = json.loads(TAGS_TABLE.read_text())["actions"]
    assert set(table) == {pin.action for pin in pins.PINS}
    for tags in table.values():
        assert all(re.fullmatch(r"[0-9a-f]{40}", c) for c in tags.values()), tags


def test_an_unpinned_action_fails_loudly() -> None:
    with pytest.raises(KeyError, match="is not pinned"):
        pins.pin("actions/cache")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_no_expression_inside_a_script(name: str) -> None:
    for rel, workflow in _workflows(name).items():
        for step in _steps(workflow):
            assert "${{" not in step.get("run", ""), f"{rel}: {step['name']}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_triggers_are_safe(name: str) -> None:
    for rel, text in _rendered(name).items():
        assert "pull_request_target" not in text, rel
        assert "\non:\n" in text, f"{rel}: the `on` key is not written plain"
        assert "workflow_run" not in text, rel


@pytest.mark.parametrize("name", sorted(SPECS))
def test_permissions_are_least_privilege(name: str) -> None:
    for rel, workflow in _workflows(name).items():
        top = workflow["permissions"]
        assert all(v in ("read", "none") for v in top.values()), rel
        for job_name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{rel}: {job_name} inherits permissions"
            writes = {k for k, v in job["permissions"].items() if v == "write"}
            allowed = WRITERS.get(rel, {}).get(job_name, set())
            assert writes <= allowed, f"{rel}: {job_name} may write {writes}"
            assert "id-token" not in job["permissions"], f"{rel}: {job_name}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_checkouts_keep_no_credentials(name: str) -> None:
    for rel, workflow in _workflows(name).items():
        for step in _steps(workflow):
            if step.get("uses", "").startswith(pins.CHECKOUT + "@"):
                assert step["with"]["persist-credentials"] is False, rel


def test_pull_request_workflow_reports_before_the_gates() -> None:
    workflow = _workflows("repository")[github.PULL_REQUEST_FILE]
    assert workflow["concurrency"] == {
        "group": "mlops-pr-${{ github.event.pull_request.number }}",
        "cancel-in-progress": True,
    }
    steps = workflow["jobs"]["run"]["steps"]
    runs = [s.get("run", "") for s in steps]
    comment = next(i for i, r in enumerate(runs) if r.startswith("cml comment update"))
    assert steps[comment]["if"] == (
        "!cancelled() && steps.report.outcome == 'success' && "
        "github.event.pull_request.head.repo.full_name == github.repository"
    )
    assert "REPO_TOKEN" in steps[comment]["env"]
    run, push = runs.index("mlops run --pull"), runs.index("mlops push")
    report = runs.index("mlops report --output mlops-report")
    assert run < push < report < comment < runs.index("mlops gates")
    assert steps[push]["if"] == github.SAME_REPOSITORY  # forks get no secrets
    # A failed run, or one that never started, is reported too, so the
    # comment is never an earlier commit's; what shows the report waits for
    # it to be written.
    assert steps[report]["id"] == "report" and steps[report]["if"] == "!cancelled()"
    for shows in range(report + 1, comment):
        assert steps[shows]["if"] == "!cancelled() && steps.report.outcome == 'success'"
    assert all("if" not in steps[i] for i in (run, runs.index("mlops gates")))
    # cml is set up even when the check of the generated files failed, so
    # that the comment can say nothing ran.
    [cml] = [s for s in steps if s["name"] == "Set up CML"]
    assert cml["if"] == "!cancelled()" and steps.index(cml) < comment
    assert runs[-1] == "mlops gates"
    assert steps[0]["with"]["fetch-depth"] == 0


def test_main_workflow_deploys_after_promotion_in_the_environment() -> None:
    spec = specs.load(SPECS["repository"])
    jobs = _workflows("repository")[github.MAIN_FILE]["jobs"]
    deploy = jobs["deploy"]
    assert deploy["needs"] == "promote"
    assert deploy["environment"] == spec.deploy["environment"]
    assert deploy["concurrency"]["cancel-in-progress"] is False
    runs = [s.get("run") for s in jobs["promote"]["steps"]]
    assert runs[-3:] == ["mlops run --pull", "mlops push", "mlops promote"]
    runs = [s.get("run") for s in deploy["steps"]]
    # Smoke-test, then commit what git says serves, push it, check it agrees.
    assert runs[-4:-2] == ["mlops deploy --check-only", "mlops release --commit"]
    assert (
        runs[-2].startswith("set -euo pipefail") and "HEAD:refs/heads/main" in runs[-2]
    )
    assert runs[-1] == "mlops release --check"
    assert deploy["steps"][-2]["env"]["GITHUB_TOKEN"] == github.TOKEN
    assert deploy["steps"][0]["with"] == {
        "fetch-depth": 0,
        "persist-credentials": False,
    }
    # The release commits (and rollbacks, which touch only deploy/ and audit/)
    # do not start the pipeline again.
    triggers = _workflows("repository")[github.MAIN_FILE][True]
    assert triggers["push"]["paths-ignore"] == ["deploy/**", "audit/**"]


def test_monitor_runs_on_the_spec_schedule_and_on_demand() -> None:
    spec = specs.load(SPECS["repository"])
    triggers = _workflows("repository")[github.MONITOR_FILE][True]  # YAML 1.1 `on`
    assert triggers["schedule"] == [{"cron": spec.monitoring["schedule"]}]
    assert "workflow_dispatch" in triggers


def test_secrets_reach_the_jobs_through_env() -> None:
    workflows = _workflows("regression-tune")
    job = workflows[github.MAIN_FILE]["jobs"]["promote"]
    assert job["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"
    # A reference to a secret by name, not a password.
    assert job["env"]["MLFLOW_TRACKING_TOKEN"] == "${{ secrets.MLFLOW_TOKEN }}"  # noqa: S105
    monitor = workflows[github.MONITOR_FILE]["jobs"]["monitor"]  # retrain: false
    assert monitor["permissions"] == {"contents": "read"}


def test_expression_helpers() -> None:
    assert github.secret("X") == "${{ secrets.X }}"
    assert github.concurrency_group("g", "a.b") == "g-${{ a.b }}"


def test_writer_keeps_on_plain_and_comments_beside_values() -> None:
    text = write.render(
        {
            write.Plain("on"): {"push": {}},
            "a": write.Commented("x@1", "v1"),
            "b": "on",
            "c": write.Commented("write", "why"),
        }
    )
    assert text.splitlines()[1:] == [
        "on:",
        "  push: {}",
        "a: x@1 # v1",
        "b: 'on'",
        "c: write # why",
    ]
    with pytest.raises(ValueError, match="one line"):
        write.Commented("a\nb", "c")


def test_monitor_opens_the_retraining_pr_on_drift_with_the_retrain_token() -> None:
    from stages.monitor import DRIFT, EXIT_CODES

    assert github.DRIFT_EXIT == EXIT_CODES[DRIFT]
    job = _workflows("repository")[github.MONITOR_FILE]["jobs"]["monitor"]
    assert job["permissions"] == {"contents": "read"}
    steps = job["steps"]
    names = [s["name"] for s in steps]
    assert names[-3:] == [
        "Check for drift",
        "Upload the drift report",
        "Open or update the retraining pull request",
    ]
    check, upload, pr = steps[-3:]
    assert check["id"] == github.MONITOR_STEP
    assert "mlops monitor --output mlops-monitor" in check["run"]
    # Only drift is let through, as a step output; 4 and 1 fail the job.
    assert 'if [ "$code" = 3 ]' in check["run"] and 'exit "$code"' in check["run"]
    assert upload["if"] == "!cancelled()"
    assert upload["with"]["path"] == github.MONITOR_DIR
    assert pr["if"] == "steps.monitor.outputs.drift == 'true'"
    assert pr["env"]["GH_TOKEN"] == "${{ secrets.MLOPS_RETRAIN_TOKEN }}"  # noqa: S105
    assert pr["env"]["RETRAIN_SECRET"] == "MLOPS_RETRAIN_TOKEN"  # noqa: S105
    assert "github.token" not in str(job)
    script = pr["run"]
    assert script.index('[ -z "${GH_TOKEN:-}" ]') < script.index("mlops retrain")
    assert script.index("mlops retrain") < script.index("push --force origin")
    assert "gh pr create --base main" in script and "gh pr edit" in script


def test_monitor_without_retrain_fails_on_drift_and_names_no_token() -> None:
    job = _workflows("regression-tune")[github.MONITOR_FILE]["jobs"]["monitor"]
    runs = [s.get("run") for s in job["steps"]]
    assert "mlops monitor --output mlops-monitor" in runs
    assert "retrain" not in str(job) and "secrets.MLOPS_RETRAIN_TOKEN" not in str(job)


def test_the_retrain_token_is_named_in_ci() -> None:
    from runner import plan as planner

    text = (GOLDEN / "example" / "mlops.yaml").read_text()
    spec = specs.parse(text + "\nci:\n  retrain_token: BOT_APP_TOKEN\n")
    files = github.compile_plan(planner.build(spec))
    job = files[github.MONITOR_FILE]["jobs"]["monitor"]
    assert job["steps"][-1]["env"]["GH_TOKEN"] == "${{ secrets.BOT_APP_TOKEN }}"  # noqa: S105
