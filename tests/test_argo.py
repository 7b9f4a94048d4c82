"""The Argo target: valid for Argo, secure by default, and the same DAG as dvc.yaml."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from jsonschema import validators

from runner import compile as compiler
from runner import plan as planner
from runner import spec as specs
from runner.schema import schema
from runner.targets import argo
from tests.support import REFERENCE, ROOT, missing, unresolved_refs
from tests.test_properties import _spec_text, pipelines

# The definitions of the three kinds, from Argo's JSON schema (see its README).
SCHEMA = REFERENCE / "argo-workflows-v4.1.2-schema.json"
GOLDEN = ROOT / "tests" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "mlops.yaml").exists())
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
KINDS = {
    argo.TEMPLATE_FILE: "WorkflowTemplate",
    argo.CRON_FILE: "CronWorkflow",
    argo.WORKFLOW_FILE: "Workflow",
}
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _manifests(case: str) -> dict[str, dict[str, Any]]:
    rendered = compiler.render(specs.load(GOLDEN / case / "mlops.yaml"))
    return {p: yaml.safe_load(t) for p, t in rendered.items() if p.startswith("argo/")}


def _closed(node: Any) -> Any:
    """Argo decodes strictly: a field the schema does not list is an error."""
    if isinstance(node, dict):
        node = {k: _closed(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
    elif isinstance(node, list):
        node = [_closed(v) for v in node]
    return node


@cache
def _argo_definitions() -> dict[str, Any]:
    return dict(_closed(json.loads(SCHEMA.read_text())["definitions"]))


def _validate(kind: str, manifest: dict[str, Any]) -> list[str]:
    schema = {
        "$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}",
        "definitions": _argo_definitions(),
    }
    validator = validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(manifest)
    ]


def _sdk_round_trip(kind: str, manifest: dict[str, Any]) -> dict[str, Any]:
    from argo_workflows import models
    from argo_workflows.api_client import ApiClient
    from argo_workflows.configuration import Configuration
    from argo_workflows.model_utils import validate_and_convert_types

    model = getattr(models, f"IoArgoprojWorkflowV1alpha1{kind}")
    obj = validate_and_convert_types(
        copy.deepcopy(manifest), (model,), ["manifest"], True, True, Configuration()
    )
    return dict(ApiClient.sanitize_for_serialization(obj))


@pytest.mark.parametrize("case", CASES)
def test_manifests_validate_against_argo_schema_and_sdk(case: str) -> None:
    manifests = _manifests(case)
    assert set(manifests) == set(KINDS)
    for path, manifest in manifests.items():
        kind = KINDS[path]
        assert manifest["kind"] == kind
        assert _validate(kind, manifest) == [], path
        assert _sdk_round_trip(kind, manifest) == manifest, path


def test_the_closed_schema_rejects_an_unknown_field() -> None:
    manifest = _manifests("example")[argo.TEMPLATE_FILE]
    manifest["spec"]["templates"][1]["container"]["imagePullPolcy"] = "Always"
    assert any("imagePullPolcy" in e for e in _validate("WorkflowTemplate", manifest))


def _break(path: str, keys: tuple[Any, ...], value: Any) -> Any:
    """A manifest of the example with one value set (None: deleted) at keys."""
    manifest = _manifests("example")[path]
    *parents, last = keys
    node = manifest
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return manifest


# Each reaches a different part of the copied schema, down to Kubernetes' own types.
BROKEN = [
    (argo.CRON_FILE, ("spec", "schedule"), "0 6 * * 1", "'schedule' was unexpected"),
    (argo.WORKFLOW_FILE, ("apiVersion",), "argoproj.io/v1", "'argoproj.io/v1alpha1'"),
    (
        argo.WORKFLOW_FILE,
        ("spec", "workflowTemplateRef", "name"),
        3,
        "3 is not of type 'string'",
    ),
    (argo.TEMPLATE_FILE, ("spec",), None, "'spec' is a required property"),
    (
        argo.TEMPLATE_FILE,
        ("spec", "securityContext", "seccompProfile"),
        {},
        "'type' is a required property",
    ),
    (
        argo.TEMPLATE_FILE,
        ("spec", "templates", 1, "container", "env", 0),
        {"value": "x"},
        "'name' is a required property",
    ),
]


@pytest.mark.parametrize(("path", "keys", "value", "error"), BROKEN)
def test_the_schema_rejects_a_broken_manifest(
    path: str, keys: tuple[Any, ...], value: Any, error: str
) -> None:
    errors = _validate(KINDS[path], _break(path, keys, value))
    assert any(error in e for e in errors), errors


def test_the_copied_schema_is_complete() -> None:
    doc = json.loads(SCHEMA.read_text())
    assert unresolved_refs(doc) == []
    for kind in KINDS.values():
        assert f"io.argoproj.workflow.v1alpha1.{kind}" in doc["definitions"]


def _lint(spec: dict[str, Any]) -> None:
    """What `argo lint` checks beyond the schema, for one workflow spec."""
    templates = {t["name"]: t for t in spec["templates"]}
    assert len(templates) == len(spec["templates"]), "duplicate template names"
    assert spec["entrypoint"] in templates
    for name in templates:
        assert K8S_NAME.match(name) and len(name) <= 63, name
    for template in templates.values():
        tasks = template.get("dag", {}).get("tasks", [])
        names = {t["name"] for t in tasks}
        graph = {t["name"]: set(t.get("dependencies", [])) for t in tasks}
        for task in tasks:
            assert K8S_NAME.match(task["name"]) and len(task["name"]) <= 63
            assert task["template"] in templates
            assert graph[task["name"]] <= names, task
        done: set[str] = set()
        while len(done) < len(graph):  # peel off tasks whose dependencies are done
            ready = {n for n, deps in graph.items() if n not in done and deps <= done}
            assert ready, f"cycle among {sorted(set(graph) - done)}"
            done |= ready


@pytest.mark.parametrize("case", CASES)
def test_manifests_pass_the_linters_semantic_checks(case: str) -> None:
    manifests = _manifests(case)
    template = manifests[argo.TEMPLATE_FILE]
    _lint(template["spec"])
    _lint(manifests[argo.CRON_FILE]["spec"]["workflowSpec"])
    ref = manifests[argo.WORKFLOW_FILE]["spec"]["workflowTemplateRef"]["name"]
    assert ref == template["metadata"]["name"]
    for manifest in manifests.values():
        name = manifest["metadata"].get("name") or manifest["metadata"]["generateName"]
        assert len(name) <= 63


def _dvc_edges(dvc: dict[str, Any]) -> set[tuple[str, str]]:
    """Edges as DVC derives them: a stage depends on whoever writes what it reads."""

    def paths(entries: list[Any]) -> list[str]:
        return [e if isinstance(e, str) else next(iter(e)) for e in entries]

    writers = {
        path: name
        for name, stage in dvc["stages"].items()
        for key in ("outs", "metrics", "plots")
        for path in paths(stage.get(key, []))
    }
    edges = set()
    for name, stage in dvc["stages"].items():
        for dep in stage.get("deps", []):
            for out, writer in writers.items():
                related = dep == out or dep.startswith(out + "/")
                if (related or out.startswith(dep + "/")) and writer != name:
                    edges.add((writer, name))
    return edges


def _assert_parity(rendered: dict[str, str]) -> None:
    dvc = yaml.safe_load(rendered["dvc.yaml"])
    template = yaml.safe_load(rendered[argo.TEMPLATE_FILE])
    templates = {t["name"]: t for t in template["spec"]["templates"]}
    tasks = templates[argo.ENTRYPOINT]["dag"]["tasks"]
    assert [t["name"] for t in tasks] == list(dvc["stages"])
    argo_edges = {(d, t["name"]) for t in tasks for d in t.get("dependencies", [])}
    assert argo_edges == _dvc_edges(dvc)
    for task in tasks:
        stage = templates[task["template"]]
        script = stage["container"]["args"][0]
        # The task runs that one stage of dvc.yaml, so runs its exact command.
        assert f"dvc repro --pull --allow-missing {task['name']}\n" in script
        assert f"mlops push {task['name']}\n" in script
        cmd = stage["metadata"]["annotations"][argo.ANNOTATION_CMD]
        assert cmd == dvc["stages"][task["name"]]["cmd"]


@pytest.mark.parametrize("case", CASES)
def test_argo_dag_is_the_dvc_dag(case: str) -> None:
    _assert_parity(compiler.render(specs.load(GOLDEN / case / "mlops.yaml")))


@settings(max_examples=40, deadline=None)
@given(pipelines())
def test_argo_dag_is_the_dvc_dag_for_any_pipeline(
    stages: dict[str, dict[str, object]],
) -> None:
    spec = specs.parse(_spec_text(stages))
    rendered = compiler.render(spec)
    _assert_parity(rendered)
    plan = planner.build(spec)
    tasks = yaml.safe_load(rendered[argo.TEMPLATE_FILE])["spec"]["templates"][0]
    deps = {
        (d, t["name"]) for t in tasks["dag"]["tasks"] for d in t.get("dependencies", [])
    }
    assert deps == set(plan.edges)


def _pods(case: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    manifests = _manifests(case)
    specs_ = [
        manifests[argo.TEMPLATE_FILE]["spec"],
        manifests[argo.CRON_FILE]["spec"]["workflowSpec"],
    ]
    return [(s, [t for t in s["templates"] if "container" in t]) for s in specs_]


@pytest.mark.parametrize("case", CASES)
def test_every_pod_meets_the_restricted_pod_security_standard(case: str) -> None:
    for spec, templates in _pods(case):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] not in ("", "default")
        assert spec["executor"]["serviceAccountName"] == spec["serviceAccountName"]
        for template in templates:
            ctx = template["container"]["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
            for env in template["container"]["env"]:
                assert "value" in env or set(env["valueFrom"]) == {"secretKeyRef"}


SETTINGS = """\
argo:
  image: registry.example.com/team/p:1.0
  service_account: runner
  parallelism: 2
  node_selector: {pool: ml}
  tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]
  resources: {cpu: "2", memory: 4Gi}
  secrets: {AWS_ACCESS_KEY_ID: aws/id, MLFLOW_TRACKING_URI: mlflow/uri}
"""


def test_stage_and_workflow_settings_reach_the_manifest() -> None:
    text = _spec_text(
        {
            "prep": {"run": "python prep.py", "outs": ["out/prep"]},
            "fit": {
                "run": "python fit.py",
                "needs": ["prep"],
                "outs": ["out/fit"],
                "resources": {"memory": "16Gi", "gpu": 1},
                "retries": 3,
                "timeout": 7200,
                "secrets": {"MLFLOW_TRACKING_URI": "mlflow-prod/uri"},
            },
        }
    )
    manifests = argo.compile_plan(planner.build(specs.parse(text + SETTINGS)))
    spec = manifests[argo.TEMPLATE_FILE]["spec"]
    assert spec["parallelism"] == 2 and spec["serviceAccountName"] == "runner"
    assert spec["nodeSelector"] == {"pool": "ml"}
    assert spec["tolerations"] == [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    prep, fit = (t for t in spec["templates"] if "container" in t)
    assert prep["container"]["image"] == "registry.example.com/team/p:1.0"
    assert "retryStrategy" not in prep and "activeDeadlineSeconds" not in prep
    assert fit["container"]["resources"] == {
        "requests": {"cpu": "2", "memory": "16Gi"},
        "limits": {"cpu": "2", "memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    assert fit["retryStrategy"]["limit"] == "3"
    assert fit["retryStrategy"]["backoff"] == argo.BACKOFF
    assert fit["activeDeadlineSeconds"] == "7200"
    secret_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in fit["container"]["env"]
        if "valueFrom" in e
    }
    assert secret_env == {
        "AWS_ACCESS_KEY_ID": {"name": "aws", "key": "id"},
        "MLFLOW_TRACKING_URI": {"name": "mlflow-prod", "key": "uri"},
    }
    for path, manifest in manifests.items():
        assert _validate(KINDS[path], manifest) == [], path


def test_parameters_reach_the_script_only_through_the_environment() -> None:
    manifests = _manifests("example")
    for template in manifests[argo.TEMPLATE_FILE]["spec"]["templates"][1:]:
        assert "{{" not in template["container"]["args"][0]
    env = manifests[argo.TEMPLATE_FILE]["spec"]["templates"][1]["container"]["env"]
    values = {e["name"]: e.get("value") for e in env}
    assert values["MLOPS_REVISION"] == argo.workflow_param(argo.P_REVISION)
    assert values["MLOPS_REPO"] == "{{workflow.parameters.repo}}"
    assert manifests[argo.CRON_FILE]["spec"]["schedules"] == ["0 6 * * 1"]


@pytest.fixture(scope="module")
def checkov_argo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, set]]:
    """Each case's checkov results, passed and failed as (check, file) pairs: one
    checkov run over every case's argo/ (it takes about 1.7 CPU-seconds to start)."""
    if not CHECKOV.exists():
        missing(f"checkov is absent: run `make {CHECKOV.relative_to(ROOT)}`")
    root = tmp_path_factory.mktemp("checkov-argo")
    for case in CASES:
        rendered = compiler.render(specs.load(GOLDEN / case / "mlops.yaml"))
        for rel, text in rendered.items():
            if rel.startswith("argo/"):
                (root / case / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / case / rel).write_text(text)
    proc = subprocess.run(
        [
            str(CHECKOV),
            *("--framework", "argo_workflows", "--skip-download"),
            *("--check", "CKV_ARGO_1,CKV_ARGO_2", "-o", "json"),
            *("-d", str(root)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    report = json.loads(proc.stdout)
    results: dict[str, dict[str, set]] = {
        case: {"passed": set(), "failed": set()} for case in CASES
    }
    for r in report if isinstance(report, list) else [report]:
        if r.get("check_type") != "argo_workflows":
            continue
        for key, found in (("passed", "passed_checks"), ("failed", "failed_checks")):
            for check in r["results"].get(found, []):
                # file_path is "/<case>/argo/<file>" under the one root.
                _, case, argo_dir, name = check["file_path"].split("/")
                assert argo_dir == "argo", check["file_path"]
                results[case][key].add((check["check_id"], f"/{name}"))
    return results


@pytest.mark.parametrize("case", CASES)
def test_checkov_argo_checks_pass(
    case: str, checkov_argo: dict[str, dict[str, set]]
) -> None:
    assert checkov_argo[case]["failed"] == set()
    # The template and the workflow (checkov does not read CronWorkflows).
    assert checkov_argo[case]["passed"] == {
        (check, f"/{name}")
        for check in ("CKV_ARGO_1", "CKV_ARGO_2")
        for name in ("workflow-template.yaml", "workflow.yaml")
    }


def test_without_argo_resources_every_pod_still_has_limits() -> None:
    """No pod runs unbounded: the schema's default applies, a field at a time."""
    text = _spec_text({"prep": {"run": "python prep.py", "outs": ["out/prep"]}})
    default = schema()["$defs"]["argo"]["properties"]["resources"]["default"]
    for extra, expected in (
        ("", default),
        ("argo:\n  resources: {cpu: 250m}\n", {**default, "cpu": "250m"}),
    ):
        manifests = argo.compile_plan(planner.build(specs.parse(text + extra)))
        containers = [
            t["container"]
            for m in manifests.values()
            for t in (m["spec"].get("workflowSpec") or m["spec"]).get("templates", [])
            if "container" in t
        ]
        assert len(containers) >= 2  # the stage and the cron monitor
        for container in containers:
            assert container["resources"] == {"requests": expected, "limits": expected}


def test_the_cron_monitor_has_the_limits_and_remote_of_every_template() -> None:
    text = _spec_text({"prep": {"run": "python prep.py", "outs": ["out/prep"]}})
    manifests = argo.compile_plan(planner.build(specs.parse(text + SETTINGS)))
    cron = manifests[argo.CRON_FILE]["spec"]["workflowSpec"]
    [monitor] = cron["templates"]
    container = monitor["container"]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    script = container["args"][0].splitlines()
    # The step's exit code is monitor's: only "no drift" (0) succeeds.
    assert script[-1] == "mlops monitor"
    assert script[-2] == argo.USE_REMOTE
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLOPS_REVISION"] == argo.DEFAULT_BRANCH_HEAD
