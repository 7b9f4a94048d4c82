"""Plan -> Argo Workflows manifests: a WorkflowTemplate, a CronWorkflow, a Workflow.

Each DAG task runs one stage of dvc.yaml the way `mlops run` does locally, in a
fresh clone of the repository at the commit given as the `revision` parameter.
The DVC remote is the only artifact store: a task pulls what its stage reads,
restores it from the run-cache when it was already computed (in CI, or by an
earlier run), and pushes its outputs and the run-cache back.
"""

from __future__ import annotations

import shlex
from typing import Any

from runner.plan import Plan, PlannedStage
from runner.spec import Spec, nested_defaults
from runner.targets.pod import (
    LABEL_MANAGED,
    LABEL_PROJECT,
    MANAGED_BY,
    container_security_context,
    image,
    pod_security_context,
    secret_env,
)

API_VERSION = "argoproj.io/v1alpha1"
DIR = "argo"
TEMPLATE_FILE = f"{DIR}/workflow-template.yaml"
CRON_FILE = f"{DIR}/cron-workflow.yaml"
WORKFLOW_FILE = f"{DIR}/workflow.yaml"

ENTRYPOINT = "pipeline"
MONITOR = "monitor"
STAGE_PREFIX = "stage-"
# Workflow parameters: where the code comes from. Passed to the container as
# environment variables, never pasted into the script, so that a parameter's
# value cannot become shell code.
P_REPO = "repo"
P_REVISION = "revision"
# The default branch's head, for the scheduled drift check.
DEFAULT_BRANCH_HEAD = "HEAD"

WORKSPACE = "/workspace"
WORKSPACE_VOLUME = "workspace"
GPU = "nvidia.com/gpu"
LABEL_STAGE = "mlops.dev/stage"
LABEL_REVISION = "mlops.dev/revision"
ANNOTATION_CMD = "mlops.dev/cmd"
# Retries wait 30s, 60s, 120s, ... up to 10 minutes between attempts.
BACKOFF = {"duration": "30s", "factor": "2", "cap": "10m"}
POD_GC = {"strategy": "OnPodSuccess"}


# -- expressions -------------------------------------------------------------


def workflow_param(name: str) -> str:
    """`{{workflow.parameters.<name>}}`: a workflow parameter, substituted by Argo."""
    return "{{workflow.parameters." + name + "}}"


def param_expression(name: str) -> str:
    """The expr-lang form of a workflow parameter, for `labelsFrom`."""
    return f"workflow.parameters.{name}"


# -- names and settings --------------------------------------------------------


def template_name(stage: str) -> str:
    """The container template that runs one stage."""
    return STAGE_PREFIX + stage


def _labels(spec: Spec) -> dict[str, str]:
    return {LABEL_PROJECT: spec.project.name, LABEL_MANAGED: MANAGED_BY}


def _metadata(spec: Spec, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": spec.argo["namespace"], "labels": _labels(spec)}


def _resources(stage: PlannedStage | None, spec: Spec) -> dict[str, Any]:
    """Requests and limits: `argo.resources`, then the stage's own (if any)."""
    own = stage.source.resources if stage and stage.source else {}
    given = spec.argo.get("resources")
    merged = {**nested_defaults("argo", "resources", given), **own}
    amounts: dict[str, Any] = {k: merged[k] for k in ("cpu", "memory") if k in merged}
    limits: dict[str, Any] = dict(amounts)
    if merged.get("gpu"):
        # Kubernetes takes extended resources as limits; the request follows.
        limits[GPU] = str(merged["gpu"])
    return {k: v for k, v in {"requests": amounts, "limits": limits}.items() if v}


def _env(spec: Spec, secrets: dict[str, str], revision: str) -> list[dict[str, Any]]:
    plain = {
        "DVC_NO_ANALYTICS": "1",
        "HOME": WORKSPACE,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLOPS_DVC_REMOTE": spec.storage.remote_name,
        "MLOPS_DVC_REMOTE_URL": spec.storage.remote_url,
        "MLOPS_REPO": workflow_param(P_REPO),
        "MLOPS_REVISION": revision,
    }
    env = [{"name": k, "value": v} for k, v in plain.items()]
    return env + secret_env({**spec.argo.get("secrets", {}), **secrets})


# -- pod settings ----------------------------------------------------------------


def _pod_settings(spec: Spec) -> dict[str, Any]:
    """Workflow-level settings shared by the template and the cron workflow."""
    account = spec.argo["service_account"]
    settings: dict[str, Any] = {
        "serviceAccountName": account,
        # Stage code never talks to the Kubernetes API; only the executor needs
        # a token, and Argo mounts one into its own containers alone.
        "automountServiceAccountToken": False,
        "executor": {"serviceAccountName": account},
        "securityContext": pod_security_context(),
        "podGC": POD_GC,
        "ttlStrategy": {"secondsAfterCompletion": spec.argo["ttl_seconds"]},
        "parallelism": spec.argo.get("parallelism"),
        "nodeSelector": dict(sorted(spec.argo.get("node_selector", {}).items())),
        "tolerations": [dict(t) for t in spec.argo.get("tolerations", [])],
        "volumes": [{"name": WORKSPACE_VOLUME, "emptyDir": {}}],
    }
    return {k: v for k, v in settings.items() if v not in (None, {}, [])}


# -- containers -------------------------------------------------------------------


def checkout_script() -> list[str]:
    """Shell lines that clone the repository at the revision into the workspace."""
    return [
        "set -eu",
        f"cd {WORKSPACE}",
        'git clone --quiet --no-checkout "$MLOPS_REPO" repo',
        "cd repo",
        'git checkout --quiet --detach "$MLOPS_REVISION"',
    ]


# The cluster's remote, whatever the committed .dvc/config says.
USE_REMOTE = (
    'dvc remote add --local --force --default "$MLOPS_DVC_REMOTE" '
    '"$MLOPS_DVC_REMOTE_URL"'
)


def stage_script(stage: str) -> str:
    """What a task runs: the one stage, as `mlops run` would, with the remote."""
    name = shlex.quote(stage)
    return "\n".join(
        [
            *checkout_script(),
            USE_REMOTE,
            # Upstream stages are restored from the run-cache their own tasks
            # pushed (or skipped when dvc.lock already matches), never rerun.
            f"dvc repro --pull --allow-missing {name}",
            # All of the stage's run, the outputs kept in git included
            # (runner.runcache), so the next task can restore it.
            f"mlops push {name}",
            "",
        ]
    )


def monitor_script() -> str:
    """What the scheduled drift check runs: `mlops monitor`, whose exit code is
    the step's. Only no drift (0) succeeds: drift (3), could not check (4) and
    a failure (1) fail the workflow, so Argo's own alerting on failed
    workflows reports them; the retraining pull request is GitHub's to open."""
    # monitor fetches the production model's train split from this remote.
    return "\n".join([*checkout_script(), USE_REMOTE, "mlops monitor", ""])


def _container(spec: Spec, script: str, env: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": image(spec),
        "command": ["sh", "-c"],
        "args": [script],
        "workingDir": WORKSPACE,
        "env": env,
        "volumeMounts": [{"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE}],
        "securityContext": container_security_context(),
    }


def stage_template(stage: PlannedStage, spec: Spec) -> dict[str, Any]:
    """The container template of one stage, with its compute, retries and secrets."""
    source = stage.source
    secrets = source.secrets if source else {}
    container = _container(
        spec, stage_script(stage.name), _env(spec, secrets, workflow_param(P_REVISION))
    )
    resources = _resources(stage, spec)
    if resources:
        container["resources"] = resources
    template: dict[str, Any] = {
        "name": template_name(stage.name),
        "metadata": {
            "labels": {LABEL_STAGE: stage.name},
            "annotations": {ANNOTATION_CMD: stage.cmd},
        },
        "container": container,
    }
    if source and source.retries:
        template["retryStrategy"] = {
            "limit": str(source.retries),
            "retryPolicy": "Always",
            "backoff": dict(BACKOFF),
        }
    if source and source.timeout:
        template["activeDeadlineSeconds"] = str(source.timeout)
    return template


def dag_template(plan: Plan) -> dict[str, Any]:
    """The DAG: one task per stage, depending on the same stages as in dvc.yaml."""
    tasks = []
    for stage in plan.stages:
        task: dict[str, Any] = {
            "name": stage.name,
            "template": template_name(stage.name),
        }
        upstream = plan.upstream_of(stage.name)
        if upstream:
            task["dependencies"] = upstream
        tasks.append(task)
    return {"name": ENTRYPOINT, "dag": {"tasks": tasks}}


# -- manifests ----------------------------------------------------------------------


def _arguments(spec: Spec) -> dict[str, Any]:
    repo: dict[str, Any] = {
        "name": P_REPO,
        "description": "Git URL of the repository to run.",
    }
    if spec.argo.get("repo"):
        repo["value"] = spec.argo["repo"]
    revision = {"name": P_REVISION, "description": "Git commit to run."}
    return {"parameters": [repo, revision]}


def workflow_template(plan: Plan) -> dict[str, Any]:
    """The pipeline as a reusable WorkflowTemplate."""
    spec = plan.spec
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkflowTemplate",
        "metadata": _metadata(spec, spec.project.name),
        "spec": {
            "entrypoint": ENTRYPOINT,
            "arguments": _arguments(spec),
            # Every run is labelled with the commit it ran, to find it again.
            "workflowMetadata": {
                "labels": _labels(spec),
                "labelsFrom": {
                    LABEL_REVISION: {"expression": param_expression(P_REVISION)}
                },
            },
            **_pod_settings(spec),
            "templates": [
                dag_template(plan),
                *(stage_template(s, spec) for s in plan.stages),
            ],
        },
    }


def cron_workflow(plan: Plan) -> dict[str, Any]:
    """The drift check on the monitoring schedule, on the default branch's head."""
    spec = plan.spec
    env = _env(spec, {}, DEFAULT_BRANCH_HEAD)
    arguments = _arguments(spec)
    container = _container(spec, monitor_script(), env)
    resources = _resources(None, spec)
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": API_VERSION,
        "kind": "CronWorkflow",
        "metadata": _metadata(spec, f"{spec.project.name}-{MONITOR}"),
        "spec": {
            "schedules": [spec.monitoring["schedule"]],
            "timezone": "UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "workflowMetadata": {"labels": _labels(spec)},
            "workflowSpec": {
                "entrypoint": MONITOR,
                "arguments": {"parameters": arguments["parameters"][:1]},
                **_pod_settings(spec),
                "templates": [
                    {
                        "name": MONITOR,
                        "metadata": {"labels": {LABEL_STAGE: MONITOR}},
                        "container": container,
                    }
                ],
            },
        },
    }


def workflow(plan: Plan) -> dict[str, Any]:
    """A one-off run of the template: `argo submit argo/workflow.yaml -p revision=…`."""
    spec = plan.spec
    metadata = _metadata(spec, "")
    del metadata["name"]
    return {
        "apiVersion": API_VERSION,
        "kind": "Workflow",
        "metadata": {"generateName": f"{spec.project.name}-", **metadata},
        "spec": {
            "workflowTemplateRef": {"name": spec.project.name},
            # Repeated from the template so that the Workflow is safe on its own.
            "serviceAccountName": spec.argo["service_account"],
            "securityContext": pod_security_context(),
        },
    }


def compile_plan(plan: Plan) -> dict[str, dict[str, Any]]:
    """The files of the Argo target, as data: one manifest per file."""
    return {
        TEMPLATE_FILE: workflow_template(plan),
        CRON_FILE: cron_workflow(plan),
        WORKFLOW_FILE: workflow(plan),
    }
