"""Plan -> GitHub Actions workflows: review, promotion and deployment, monitoring.

Three workflows, each hardened by default:

- pull request: run the pipeline (restored from the DVC run-cache where it
  can be), post the report as one updated comment, then fail on a failed gate;
- push to main: restore the merged pull request's run from the run-cache
  (`mlops push` shared all of it), promote the version it registered, then,
  in the spec's GitHub environment, smoke-test the production model and commit
  `deploy/<environment>/` naming it to main (git is the record of what runs;
  Argo CD rolls out what main says);
- schedule and manual dispatch: check for drift, open a retraining pull request.

Every workflow grants no permissions at the top and each job only what it
uses; every action is pinned by commit (runner.targets.pins); no expression is
ever expanded inside a `run:` script, values reach scripts through `env:`;
checkouts keep no credentials. Cloud credentials come from repository secrets
(`ci.secrets`), not OIDC: the spec names no role to assume, so `id-token:
write` would grant a token nothing uses.
"""

from __future__ import annotations

from typing import Any

from runner.plan import Plan
from runner.spec import Spec
from runner.targets.pins import CHECKOUT, SETUP_CML, SETUP_PYTHON, UPLOAD_ARTIFACT, pin
from runner.write import Commented, Plain

WORKFLOWS = ".github/workflows"
PULL_REQUEST_FILE = f"{WORKFLOWS}/mlops-pull-request.yml"
MAIN_FILE = f"{WORKFLOWS}/mlops-main.yml"
MONITOR_FILE = f"{WORKFLOWS}/mlops-monitor.yml"

MAIN_BRANCH = "main"
REPORT_DIR = "mlops-report"
REPORT_FILE = f"{REPORT_DIR}/report.md"
# Marks the pull request's one report comment, so each run updates it.
COMMENT_TITLE = "mlops report"
INSTALL = "python -m pip install -c constraints.txt -e ."
# Bare `on` would be quoted by a YAML 1.1 writer; GitHub reads YAML 1.2.
ON = Plain("on")

READ = "read"
# Commits of deploy/ by the workflow: GitHub's own bot identity. A push made
# with the job's GITHUB_TOKEN starts no workflow, so it cannot loop.
BOT = {
    "GIT_AUTHOR_NAME": "github-actions[bot]",
    "GIT_AUTHOR_EMAIL": "41898282+github-actions[bot]@users.noreply.github.com",
}
BOT_ENV = {
    **BOT,
    "GIT_COMMITTER_NAME": BOT["GIT_AUTHOR_NAME"],
    "GIT_COMMITTER_EMAIL": BOT["GIT_AUTHOR_EMAIL"],
}
# Commits that only record a release (the bot's, or a person's rollback) need
# no pipeline run: nothing in them trains or promotes.
RELEASE_RECORDS = ["deploy/**", "audit/**"]
PUSH_TO_MAIN = """\
set -euo pipefail
if [ "$(git rev-parse HEAD)" = "$GITHUB_SHA" ]; then
  echo "deploy/ already named the production model: nothing to push"
  exit 0
fi
auth=$(printf 'x-access-token:%s' "$GITHUB_TOKEN" | base64 | tr -d '\\n')
header="http.extraheader=AUTHORIZATION: basic $auth"
for attempt in 1 2 3; do
  if git -c "$header" push origin HEAD:refs/heads/main; then
    exit 0
  fi
  echo "main moved on; rebasing the deploy/ commit onto it (attempt $attempt)"
  git -c "$header" fetch -q origin main
  git rebase FETCH_HEAD
done
exit 1
"""


# The monitor workflow. A drift verdict (stages.monitor's exit code 3; a test
# checks they agree) with retraining on is the pull request's signal, not a
# failure; could not check (4) or a failed command (1) always fails the job.
MONITOR_DIR = "mlops-monitor"  # not hidden: upload-artifact skips dot folders
MONITOR_STEP = "monitor"
DRIFT_EXIT = 3
RETRAIN_STATE = ".mlops/retrain"  # runner.retrain.STATE_DIR
CHECK_DRIFT = """\
set +e
{command}
code=$?
set -e
if [ "$code" = {drift} ]; then
  echo "drift=true" >> "$GITHUB_OUTPUT"
  echo "drift: opening or updating the retraining pull request"
  exit 0
fi
exit "$code"
"""
OPEN_RETRAINING_PR = """\
set -euo pipefail
if [ -z "${{GH_TOKEN:-}}" ]; then
  echo "::error::drift found, but the repository secret $RETRAIN_SECRET is not set: \\
add a fine-grained token or GitHub App token with contents and pull-requests \\
write on this repository (README, Monitoring). A pull request opened with \\
GITHUB_TOKEN would start no checks."
  exit 1
fi
# One retraining pull request at a time: an open one is updated.
open=$(gh pr list --state open --base {main} --json headRefName \\
  --jq '.[].headRefName | select(startswith("mlops/retrain-"))' | head -n 1)
if [ -n "$open" ]; then
  mlops retrain --monitor {monitor} --branch "$open"
else
  mlops retrain --monitor {monitor}
fi
if [ "$(git rev-parse HEAD)" = "$GITHUB_SHA" ]; then
  echo "nothing new to retrain on"
  exit 0
fi
branch=$(cat {state}/branch)
title=$(cat {state}/title)
auth=$(printf 'x-access-token:%s' "$GH_TOKEN" | base64 | tr -d '\\n')
# The branch is always main plus one commit, recomputed each run.
git -c "http.extraheader=AUTHORIZATION: basic $auth" \\
  push --force origin "HEAD:refs/heads/$branch"
if [ -n "$open" ]; then
  gh pr edit "$branch" --title "$title" --body-file {state}/body.md
else
  gh pr create --base {main} --head "$branch" --title "$title" \\
    --body-file {state}/body.md
fi
"""


def write_access(why: str) -> Commented:
    """A `write` permission, with the reason it is granted beside it."""
    return Commented("write", why)


# -- GitHub expressions: built here and nowhere else -------------------------


def expression(body: str) -> str:
    """`${{ body }}`: a value GitHub substitutes before the job runs."""
    return "${{ " + body + " }}"


def context(*names: str) -> str:
    """A dotted context path, e.g. context('github', 'repository')."""
    return ".".join(names)


def secret(name: str) -> str:
    """The value of a repository secret."""
    return expression(context("secrets", name))


def concurrency_group(prefix: str, key: str) -> str:
    """A concurrency group per value of key, e.g. one per pull request."""
    return f"{prefix}-{expression(key)}"


def equals(left: str, right: str) -> str:
    """A comparison for `if:` (GitHub evaluates `if:` as an expression as is)."""
    return f"{left} == {right}"


PR_NUMBER = context("github", "event", "pull_request", "number")
PR_HEAD_REPO = context("github", "event", "pull_request", "head", "repo", "full_name")
REPOSITORY = context("github", "repository")
TOKEN = expression(context("github", "token"))
# Pull requests from forks get neither secrets nor a token that can write.
SAME_REPOSITORY = equals(PR_HEAD_REPO, REPOSITORY)
DRIFTED = context("steps", MONITOR_STEP, "outputs", "drift")
NOT_CANCELLED = "!cancelled()"


# -- steps -------------------------------------------------------------------


def _uses(
    action: str,
    name: str,
    settings: dict[str, Any] | None = None,
    *,
    when: str | None = None,
) -> dict:
    found = pin(action)
    step: dict[str, Any] = {"name": name}
    if when:
        step["if"] = when
    step["uses"] = Commented(found.ref, found.tag)
    if settings:
        step["with"] = settings
    return step


def _run(
    name: str,
    script: str,
    *,
    env: dict[str, str] | None = None,
    when: str | None = None,
) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name}
    if when:
        step["if"] = when
    if env:
        step["env"] = env
    step["run"] = script
    return step


def _checkout(full_history: bool = False) -> dict[str, Any]:
    settings: dict[str, Any] = {"persist-credentials": False}
    if full_history:
        # For the report (main's metrics) and for rebasing a deploy/ commit.
        settings = {"fetch-depth": 0, **settings}
    return _uses(CHECKOUT, "Check out", settings)


def _install(spec: Spec) -> list[dict[str, Any]]:
    """Python and the project, checked to match its committed generated files."""
    return [
        _uses(SETUP_PYTHON, "Set up Python", {"python-version": spec.ci["python"]}),
        _run("Install the project", INSTALL),
        _run("Check the generated files are current", "mlops compile --check"),
    ]


def _setup(spec: Spec) -> list[dict[str, Any]]:
    """The project installed, and DVC initialised with the spec's remote."""
    # `mlops plan` initialises DVC and its remote, then says what would run.
    return [*_install(spec), _run("Set up DVC and show the plan", "mlops plan")]


def _run_pipeline() -> dict[str, Any]:
    # --pull: restore every stage the remote's run-cache already has (a pull
    # request's run, on main) and pull the outputs of unchanged stages.
    return _run("Run the pipeline, restoring from the run-cache", "mlops run --pull")


def _push(when: str | None = None) -> dict[str, Any]:
    # `mlops push`, not `dvc push --run-cache`: it also uploads the outputs
    # kept in git, without which no other machine can restore these runs.
    return _run(
        "Push outputs and the run-cache to the DVC remote", "mlops push", when=when
    )


# -- jobs --------------------------------------------------------------------


def _job(
    spec: Spec,
    name: str,
    permissions: dict[str, str],
    steps: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    job: dict[str, Any] = {"name": name, "runs-on": spec.ci["runs_on"], **extra}
    job["permissions"] = permissions
    env = _secrets_env(spec)
    if env:
        job["env"] = env
    job["steps"] = steps
    return job


def _secrets_env(spec: Spec) -> dict[str, str]:
    given = spec.ci.get("secrets") or {}
    return {var: secret(given[var]) for var in sorted(given)}


def _no_cancel(group: str) -> dict[str, Any]:
    return {"group": group, "cancel-in-progress": False}


def _workflow(name: str, on: dict[str, Any], **rest: Any) -> dict[str, Any]:
    return {"name": name, ON: on, "permissions": {}, **rest}


# -- workflows ---------------------------------------------------------------


def _pull_request(spec: Spec) -> dict[str, Any]:
    steps = [
        _checkout(full_history=True),
        *_setup(spec),
        _uses(SETUP_CML, "Set up CML"),
        _run_pipeline(),
        _push(when=SAME_REPOSITORY),
        _run("Write the report", f"mlops report --output {REPORT_DIR}"),
        _run(
            "Add the report to the job summary",
            f'cat {REPORT_FILE} >> "$GITHUB_STEP_SUMMARY"',
        ),
        _uses(
            UPLOAD_ARTIFACT,
            "Upload the report",
            {"name": REPORT_DIR, "path": REPORT_DIR, "if-no-files-found": "error"},
        ),
        _run(
            "Comment the report on the pull request",
            f'cml comment update --watermark-title="{COMMENT_TITLE}" {REPORT_FILE}',
            env={"REPO_TOKEN": TOKEN},
            when=SAME_REPOSITORY,
        ),
        _check_release(when=SAME_REPOSITORY),
        # Last, so that a failed gate still leaves its report on the PR.
        _run("Check the gates", "mlops gates"),
    ]
    job = _job(
        spec,
        "Run, report and check the gates",
        {
            "contents": READ,
            "pull-requests": write_access("post and update the report comment"),
        },
        steps,
    )
    return _workflow(
        f"mlops: {spec.project.name} pull request",
        {"pull_request": {"branches": [MAIN_BRANCH]}},
        concurrency={
            "group": concurrency_group("mlops-pr", PR_NUMBER),
            "cancel-in-progress": True,
        },
        jobs={"run": job},
    )


def _check_release(when: str | None = None) -> dict[str, Any]:
    return _run(
        "Check deploy/ names the registry's production model",
        "mlops release --check",
        when=when,
    )


def _main(spec: Spec) -> dict[str, Any]:
    environment = spec.deploy["environment"]
    promote = _job(
        spec,
        "Run from the run-cache and promote",
        {"contents": READ},
        [
            _checkout(),
            *_setup(spec),
            _run_pipeline(),
            _push(),
            _run("Promote the model", "mlops promote"),
        ],
        concurrency=_no_cancel("mlops-promote"),
    )
    deploy = _job(
        spec,
        f"Deploy to {environment}",
        {"contents": write_access(f"commit deploy/{environment}/ to main")},
        [
            # Full history: the deploy/ commit may need rebasing onto main.
            _checkout(full_history=True),
            *_install(spec),
            _run("Smoke-test the production model", "mlops deploy --check-only"),
            _run(
                f"Record the release in deploy/{environment}/",
                "mlops release --commit",
                env=BOT_ENV,
            ),
            _run(
                "Push the release to main",
                PUSH_TO_MAIN,
                env={"GITHUB_TOKEN": TOKEN, **BOT_ENV},
            ),
            _check_release(),
        ],
        needs="promote",
        environment=environment,
        concurrency=_no_cancel(f"mlops-deploy-{environment}"),
    )
    return _workflow(
        f"mlops: {spec.project.name} main",
        {"push": {"branches": [MAIN_BRANCH], "paths-ignore": RELEASE_RECORDS}},
        jobs={"promote": promote, "deploy": deploy},
    )


def _check_drift(spec: Spec, retrain: bool) -> dict[str, Any]:
    command = f"mlops monitor --output {MONITOR_DIR}"
    if not retrain:
        # Drift (3), could not check (4) and a failure (1) all fail the job.
        return _run("Check for drift", command)
    step = _run(
        "Check for drift", CHECK_DRIFT.format(command=command, drift=DRIFT_EXIT)
    )
    return {"id": MONITOR_STEP, **step}


def _open_retraining_pr(spec: Spec) -> dict[str, Any]:
    token = spec.ci["retrain_token"]
    return _run(
        "Open or update the retraining pull request",
        OPEN_RETRAINING_PR.format(
            main=MAIN_BRANCH, monitor=MONITOR_DIR, state=RETRAIN_STATE
        ),
        env={
            # Not github.token: a pull request opened with it starts no
            # workflow, so the retraining PR's checks would never run.
            "GH_TOKEN": secret(token),
            "GH_REPO": expression(REPOSITORY),
            "RETRAIN_SECRET": token,
            **BOT_ENV,
        },
        when=equals(DRIFTED, "'true'"),
    )


def _monitor(spec: Spec) -> dict[str, Any]:
    retrain = bool(spec.monitoring["retrain"])
    steps = [
        _checkout(),
        # No `dvc pull`: monitor fetches the production model's train split
        # from the remote by its hash itself, and needs no other data.
        *_setup(spec),
        _check_drift(spec, retrain),
        _uses(
            UPLOAD_ARTIFACT,
            "Upload the drift report",
            {"name": MONITOR_DIR, "path": MONITOR_DIR, "if-no-files-found": "warn"},
            # After a failed check too: "could not check" says why in it.
            when=NOT_CANCELLED,
        ),
    ]
    if retrain:
        steps.append(_open_retraining_pr(spec))
    # The job's own token only reads: the retraining branch and pull request
    # are pushed and opened with ci.retrain_token, whose PR starts checks.
    job = _job(spec, "Check for drift", {"contents": READ}, steps)
    return _workflow(
        f"mlops: {spec.project.name} monitor",
        {
            "schedule": [{"cron": spec.monitoring["schedule"]}],
            "workflow_dispatch": {},
        },
        concurrency=_no_cancel("mlops-monitor"),
        jobs={"monitor": job},
    )


def compile_plan(plan: Plan) -> dict[str, dict[str, Any]]:
    """The files of the GitHub Actions target, as data."""
    spec = plan.spec
    return {
        PULL_REQUEST_FILE: _pull_request(spec),
        MAIN_FILE: _main(spec),
        MONITOR_FILE: _monitor(spec),
    }
