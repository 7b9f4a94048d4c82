"""The serving manifests in deploy/<env>/: valid for Kubernetes, KServe and Argo CD,
hardened, naming the model version immutably, rendered from the release record."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from runner import compile as compiler
from runner import deploy_state
from runner import spec as specs
from runner.deploy_state import Release
from runner.errors import RunError, SpecError
from runner.schema import schema
from runner.targets import pod, serving_pod
from tests.support import ROOT, missing, mlops

REFERENCE = Path(__file__).parent / "reference"
GOLDEN = Path(__file__).parent / "golden"
# Golden cases with a release record: their manifests are committed bytes.
GOLDEN_DEPLOYS = sorted(p.parent.name for p in GOLDEN.glob("*/deploy"))
KSERVE_SCHEMA = REFERENCE / "kserve-v0.20.0-inferenceservice-v1beta1.schema.json"
ARGOCD_SCHEMA = REFERENCE / "argo-cd-v3.5.1-application-v1alpha1.schema.json"
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
# KServe 0.20 needs Kubernetes 1.32 or later; kubernetes-validate 1.37 ships
# the schemas of 1.25 to 1.37.
KUBERNETES_VERSION = "1.33.0"
RELEASE = Release("cancer-classifier", "3", "0123456789abcdef0123456789abcdef")
REPO = "https://github.com/example/cancer-classifier.git"
DIGEST = "ghcr.io/acme/cancer-classifier@sha256:" + "4f1c" * 16
TARGETS = (serving_pod.KUBERNETES, serving_pod.KSERVE)
BUILTIN_KINDS = {
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
}


def _spec(target: str, **deploy: Any) -> specs.Spec:
    """The repository's example switched to a cluster target, ready for one."""
    doc = yaml.safe_load((ROOT / "mlops.yaml").read_text())
    doc["deploy"] = {**doc.get("deploy", {}), "target": target, **deploy}
    doc["argo"] = {
        **doc["argo"],
        "repo": REPO,
        "secrets": {"MLFLOW_TRACKING_URI": "mlflow/uri"},
    }
    return specs.parse(yaml.safe_dump(doc, sort_keys=False))


def _deploy_files(
    spec: specs.Spec, release: Release | None = RELEASE
) -> dict[str, str]:
    rendered = compiler.render(spec, release)
    return {
        p: t for p, t in rendered.items() if p.startswith(serving_pod.DEPLOY_DIR + "/")
    }


def _manifests(target: str, **deploy: Any) -> dict[str, dict[str, Any]]:
    files = _deploy_files(_spec(target, **deploy))
    return {path: yaml.safe_load(text) for path, text in files.items()}


def _by_kind(target: str, **deploy: Any) -> dict[str, dict[str, Any]]:
    manifests = _manifests(target, **deploy).values()
    return {m["kind"]: m for m in manifests}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


# -- which files ----------------------------------------------------------------------


def test_each_cluster_target_writes_its_files_and_an_application_beside_them() -> None:
    assert set(_deploy_files(_spec(serving_pod.KUBERNETES))) == {
        "deploy/production.application.yaml",
        "deploy/production/deployment.yaml",
        "deploy/production/service.yaml",
        "deploy/production/horizontal-pod-autoscaler.yaml",
        "deploy/production/pod-disruption-budget.yaml",
    }
    assert set(_deploy_files(_spec(serving_pod.KSERVE))) == {
        "deploy/production.application.yaml",
        "deploy/production/inference-service.yaml",
    }
    kinds = {m["kind"] for m in _manifests(serving_pod.KUBERNETES).values()}
    assert kinds == BUILTIN_KINDS | {"Application"}


@pytest.mark.parametrize("target", TARGETS)
def test_nothing_is_deployed_before_the_first_release(target: str) -> None:
    assert _deploy_files(_spec(target), release=None) == {}


def test_the_local_target_has_only_the_release_record(tmp_path: Path) -> None:
    spec = _spec("local")
    assert _deploy_files(spec) == {}
    written = deploy_state.write_release(tmp_path, spec, RELEASE)
    assert written == ["deploy/production/release.json"]
    assert [p.name for p in (tmp_path / "deploy").rglob("*")] == [
        "production",
        "release.json",
    ]


# -- the real validators -----------------------------------------------------------------


def _kubernetes_validate(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(KUBERNETES_VALIDATE),
            *("--strict", "--kubernetes-version", KUBERNETES_VERSION),
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("target", TARGETS)
def test_builtin_kinds_pass_kubernetes_validate_strict(
    target: str, tmp_path: Path
) -> None:
    files = _deploy_files(_spec(target))
    _write(tmp_path, files)
    builtin = [
        tmp_path / rel
        for rel, text in files.items()
        if yaml.safe_load(text)["kind"] in BUILTIN_KINDS
    ]
    assert len(builtin) == (4 if target == serving_pod.KUBERNETES else 0)
    if not builtin:
        return
    proc = _kubernetes_validate(builtin)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = re.findall(r"^INFO (\S+) passed for resource", proc.stdout, re.M)
    assert sorted(passed) == sorted(map(str, builtin)), proc.stdout


@pytest.mark.parametrize("case", GOLDEN_DEPLOYS)
def test_golden_manifests_pass_the_validators(case: str) -> None:
    paths = sorted((GOLDEN / case / "deploy").rglob("*.yaml"))
    manifests = {path: yaml.safe_load(path.read_text()) for path in paths}
    builtin = [p for p, m in manifests.items() if m["kind"] in BUILTIN_KINDS]
    if builtin:
        proc = _kubernetes_validate(builtin)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.count(" passed for resource ") == len(builtin)
    schemas = {"InferenceService": KSERVE_SCHEMA, "Application": ARGOCD_SCHEMA}
    for path, manifest in manifests.items():
        if manifest["kind"] in schemas:
            assert _crd_errors(schemas[manifest["kind"]], manifest) == [], path
    assert {m["kind"] for m in manifests.values()} - BUILTIN_KINDS <= set(schemas)


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path: Path) -> None:
    deployment = _by_kind(serving_pod.KUBERNETES)["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    proc = _kubernetes_validate([path])
    assert proc.returncode != 0
    assert "readinesProbe" in proc.stdout + proc.stderr


def _closed(node: Any) -> Any:
    """A cluster rejects fields a structural schema does not list (strict
    field validation, what kubectl and Argo CD's server-side apply ask for)."""
    if isinstance(node, dict):
        node = {k: _closed(v) for k, v in node.items()}
        open_ = node.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in node and "additionalProperties" not in node and not open_:
            node["additionalProperties"] = False
    elif isinstance(node, list):
        node = [_closed(v) for v in node]
    return node


@cache
def _crd_validator(path: Path) -> Draft7Validator:
    return Draft7Validator(_closed(json.loads(path.read_text())))


def _crd_errors(path: Path, manifest: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _crd_validator(path).iter_errors(manifest)
    ]


def test_the_inference_service_validates_against_kserves_crd() -> None:
    isvc = _by_kind(serving_pod.KSERVE)["InferenceService"]
    assert _crd_errors(KSERVE_SCHEMA, isvc) == []
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["minReplica"] = broken["spec"]["predictor"].pop(
        "minReplicas"
    )
    assert any("minReplica" in e for e in _crd_errors(KSERVE_SCHEMA, broken))


@pytest.mark.parametrize("target", TARGETS)
def test_the_application_validates_against_argo_cds_crd(target: str) -> None:
    app = _by_kind(target)["Application"]
    assert _crd_errors(ARGOCD_SCHEMA, app) == []
    broken = copy.deepcopy(app)
    broken["spec"]["syncPolicy"]["automated"]["selfheal"] = True
    assert any("selfheal" in e for e in _crd_errors(ARGOCD_SCHEMA, broken))


def _checkov(root: Path) -> tuple[list[dict[str, Any]], ...]:
    proc = subprocess.run(
        [
            str(CHECKOV),
            *("--framework", "kubernetes", "--skip-download"),
            *("-o", "json", "-d", str(root)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    results = [r["results"] for r in reports if r.get("check_type") == "kubernetes"]
    return tuple(
        [check for r in results for check in r.get(key, [])]
        for key in ("passed_checks", "failed_checks", "skipped_checks")
    )


def test_checkov_finds_nothing_and_every_skip_says_why(tmp_path: Path) -> None:
    if not CHECKOV.exists():
        missing(f"checkov is absent: run `make {CHECKOV.relative_to(ROOT)}`")
    for target in TARGETS:
        _write(tmp_path / target, _deploy_files(_spec(target)))
    _write(
        tmp_path / "digest", _deploy_files(_spec(serving_pod.KUBERNETES, image=DIGEST))
    )
    for case in GOLDEN_DEPLOYS:
        shutil.copytree(GOLDEN / case / "deploy", tmp_path / f"golden-{case}")
    # A control: the same Deployment with a writable root filesystem.
    writable = _by_kind(serving_pod.KUBERNETES)["Deployment"]
    container = writable["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    _write(tmp_path, {"control/deployment.yaml": yaml.safe_dump(writable)})

    passed, failed, skipped = _checkov(tmp_path)
    findings = {(f["check_id"], f["file_path"]) for f in failed}
    assert findings == {("CKV_K8S_22", "/control/deployment.yaml")}
    assert {p["file_path"] for p in passed} >= {
        "/kubernetes/deploy/production/deployment.yaml",
        "/digest/deploy/production/deployment.yaml",
    }
    skips = {
        (s["file_path"].split("/")[1], s["check_id"]): s["check_result"][
            "suppress_comment"
        ]
        for s in skipped
        if not s["file_path"].startswith("/control/")
    }
    assert all(len(reason) > 20 for reason in skips.values()), skips
    assert set(skips) == {
        ("kubernetes", "CKV_K8S_43"),  # a tag, not a digest
        ("kubernetes", "CKV_K8S_14"),  # the default <project>:latest
        ("kubernetes", "CKV_K8S_35"),  # MLflow reads its URI from the environment
        ("kubernetes", "CKV2_K8S_6"),  # network policy is the cluster's
        ("digest", "CKV_K8S_35"),
        ("digest", "CKV2_K8S_6"),
        ("golden-serving", "CKV_K8S_35"),  # its image is pinned by digest
        ("golden-serving", "CKV2_K8S_6"),
    }


# -- what the pods are --------------------------------------------------------------------


def _pods(target: str, **deploy: Any) -> dict[str, Any]:
    kinds = _by_kind(target, **deploy)
    if target == serving_pod.KSERVE:
        return dict(kinds["InferenceService"]["spec"]["predictor"])
    return dict(kinds["Deployment"]["spec"]["template"]["spec"])


@pytest.mark.parametrize("target", TARGETS)
def test_the_pod_meets_the_restricted_standard_with_a_read_only_root(
    target: str,
) -> None:
    spec = _pods(target)
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": pod.UID,
        "runAsGroup": pod.UID,
        "fsGroup": pod.UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = spec["containers"]
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == pod.UID
    assert ctx["readOnlyRootFilesystem"] is True
    # A tag pushed again reaches every node alike.
    assert container["imagePullPolicy"] == "Always"
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable places are the pod's own empty folders.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "predictions": serving_pod.PREDICTIONS_DIR}
    assert spec["volumes"] == [{"name": n, "emptyDir": {}} for n in mounts]
    resources = container["resources"]
    # The schema's default for deploy.resources, read where it is stated.
    default = schema()["$defs"]["deploy"]["properties"]["resources"]["default"]
    assert resources["requests"] == resources["limits"] == default
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert serving_pod.LABEL_VERSION not in spread["labelSelector"]["matchLabels"]
    for env in container["env"]:
        assert "value" in env or set(env["valueFrom"]) == {"secretKeyRef"}
    secret = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
    assert secret == {
        "MLFLOW_TRACKING_URI": {"secretKeyRef": {"name": "mlflow", "key": "uri"}}
    }


@pytest.mark.parametrize(("target", "port"), [("kubernetes", 5001), ("kserve", 8080)])
def test_the_container_serves_the_released_version_with_probes(
    target: str, port: int
) -> None:
    (container,) = _pods(target)["containers"]
    assert container["command"] == [
        "mlops", "serve", "-f", serving_pod.SPEC_IN_IMAGE, "--version", "3",
        "--host", serving_pod.LISTEN_ALL, "--port", str(port), "--workers", "1",
        "--prediction-log", serving_pod.PREDICTIONS_DIR,
    ]  # fmt: skip
    assert container["ports"] == [
        {"name": "http", "containerPort": port, "protocol": "TCP"}
    ]
    probes = {k: container[k]["httpGet"] for k in container if k.endswith("Probe")}
    assert probes == {
        "startupProbe": {"path": "/ready", "port": port},
        "readinessProbe": {"path": "/ready", "port": port},
        "livenessProbe": {"path": "/health", "port": port},
    }
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


@pytest.mark.parametrize("target", TARGETS)
def test_the_manifests_name_the_version_never_an_alias(target: str) -> None:
    texts = _deploy_files(_spec(target, image=DIGEST))
    for rel, text in texts.items():
        assert "@production" not in text and "@candidate" not in text, rel
        assert "models:/" not in text, rel
    manifests = [yaml.safe_load(t) for p, t in texts.items() if "/production/" in p]
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels[serving_pod.LABEL_VERSION] == "3"
        assert labels[serving_pod.LABEL_MODEL] == "cancer-classifier"
        assert (
            manifest["metadata"]["annotations"][serving_pod.ANNOTATION_RUN]
            == RELEASE.run_id
        )
    (container,) = _pods(target, image=DIGEST)["containers"]
    assert container["image"] == DIGEST


def test_the_deployment_selects_pods_by_what_never_changes() -> None:
    kinds = _by_kind(serving_pod.KUBERNETES)
    deployment = kinds["Deployment"]["spec"]
    selector = deployment["selector"]["matchLabels"]
    assert serving_pod.LABEL_VERSION not in selector  # a selector is immutable
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert pod_labels[serving_pod.LABEL_VERSION] == "3"
    assert kinds["Service"]["spec"]["selector"] == selector
    # A drain takes one pod at a time, however far the autoscaler scaled.
    assert kinds["PodDisruptionBudget"]["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": selector},
    }
    assert "replicas" not in deployment  # the autoscaler's, or Argo CD fights it
    annotations = deployment["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "5001"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_replicas_and_resources_come_from_the_schema_and_the_spec() -> None:
    defaults = schema()["$defs"]["deploy"]["properties"]["replicas"]["properties"]
    hpa = _by_kind(serving_pod.KUBERNETES)["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] == defaults["min"]["default"]
    assert hpa["maxReplicas"] == defaults["max"]["default"]
    target = hpa["metrics"][0]["resource"]["target"]
    assert target["averageUtilization"] == defaults["cpu_utilization"]["default"]

    given = {"replicas": {"max": 9}, "resources": {"memory": "3Gi"}}
    kinds = _by_kind(serving_pod.KUBERNETES, **given)
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (defaults["min"]["default"], 9)
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "3Gi"}
    predictor = _by_kind(serving_pod.KSERVE, **given)["InferenceService"]["spec"][
        "predictor"
    ]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 9)
    assert predictor["scaleMetric"] == "cpu"


def test_the_image_and_namespace_default_to_argos() -> None:
    deployment = _by_kind(serving_pod.KUBERNETES)["Deployment"]
    assert deployment["metadata"]["namespace"] == "mlops"  # argo.namespace
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "cancer-classifier:latest"
    deployment = _by_kind(serving_pod.KUBERNETES, namespace="serving")["Deployment"]
    assert deployment["metadata"]["namespace"] == "serving"


# -- the Argo CD Application ----------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_the_application_syncs_the_folder_but_not_the_release_record(
    target: str,
) -> None:
    files = _manifests(target)
    app = files[serving_pod.application_file(_spec(target))]
    source = app["spec"]["source"]
    assert source == {
        "repoURL": REPO,
        "targetRevision": "main",
        "path": "deploy/production",
        "directory": {"exclude": "release.json"},
    }
    # Not inside the folder it syncs, so Argo CD never prunes its own Application.
    assert not serving_pod.application_file(_spec(target)).startswith(
        source["path"] + "/"
    )
    assert app["metadata"]["namespace"] == "argocd"
    assert app["spec"]["project"] == "default"
    assert app["spec"]["destination"] == {
        "server": "https://kubernetes.default.svc",
        "namespace": "mlops",
    }
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_argocd_settings_override_argo_repo() -> None:
    other = "https://git.example.com/ml/serving.git"
    app = _by_kind(
        serving_pod.KUBERNETES,
        argocd={
            "repo": other,
            "revision": "release",
            "namespace": "cd",
            "project": "ml",
        },
    )["Application"]
    assert app["spec"]["source"]["repoURL"] == other
    assert app["spec"]["source"]["targetRevision"] == "release"
    assert (app["metadata"]["namespace"], app["spec"]["project"]) == ("cd", "ml")


def _spec_text(target: str, drop: tuple[str, ...] = ()) -> str:
    doc = yaml.safe_load((ROOT / "mlops.yaml").read_text())
    doc["deploy"]["target"] = target
    doc["argo"] = {
        "namespace": "mlops",
        "repo": REPO,
        "secrets": {"MLFLOW_TRACKING_URI": "mlflow/uri"},
    }
    for key in drop:
        del doc["argo"][key]
    return yaml.safe_dump(doc, sort_keys=False)


def _refused(text: str) -> tuple[int, str]:
    """The one problem `mlops validate` finds: its line number and the line."""
    with pytest.raises(SpecError) as caught:
        specs.parse(text)
    (line,) = caught.value.lines()
    found = re.match(r"mlops\.yaml:(\d+):(\d+): ", line)
    assert found, line
    return int(found[1]), line


def _line_of(text: str, *path: str) -> int:
    """The 1-based line of a key path's last key, each key found after the last."""
    at = 0
    lines = text.splitlines()
    for key in path:
        at = next(
            i
            for i, s in enumerate(lines, 1)
            if i > at and s.lstrip().startswith(key + ":")
        )
    return at


@pytest.mark.parametrize("target", TARGETS)
def test_a_cluster_target_without_a_repository_is_refused_by_validate(
    target: str, tmp_path: Path
) -> None:
    text = _spec_text(target, drop=("repo",))
    at, line = _refused(text)  # at load time: fail on the PR, not on promote
    assert at == _line_of(text, "deploy")  # no argocd block: its parent
    assert ": deploy -> argocd -> repo: " in line
    assert "set deploy.argocd.repo or argo.repo" in line
    (tmp_path / "mlops.yaml").write_text(text)
    proc = mlops("validate", cwd=tmp_path, check=False)
    assert (proc.returncode, proc.stderr.splitlines()) == (2, [line])


def test_a_pod_cannot_reach_a_tracking_store_on_this_machine() -> None:
    text = _spec_text(serving_pod.KUBERNETES, drop=("secrets",))
    at, line = _refused(text)
    assert at == _line_of(text, "deploy", "target")
    assert "deploy -> target: serving pods fetch the model from MLflow" in line
    assert "MLFLOW_TRACKING_URI" in line
    # The local target serves on this machine, where the file is.
    assert _deploy_files(specs.parse(_spec_text("local", drop=("secrets",)))) == {}


def test_replicas_min_above_max_is_refused() -> None:
    doc = yaml.safe_load(_spec_text(serving_pod.KUBERNETES))
    doc["deploy"]["replicas"] = {"min": 6, "max": 3}
    text = yaml.safe_dump(doc, sort_keys=False)
    at, line = _refused(text)
    assert at == _line_of(text, "deploy", "replicas")
    assert "deploy -> replicas: min (6) is more than max (3)" in line


def test_a_release_of_another_model_is_refused() -> None:
    other = Release("fraud-detector", "3", RELEASE.run_id)
    with pytest.raises(RunError, match="names model 'fraud-detector' but registry"):
        compiler.render(_spec(serving_pod.KUBERNETES), other)


# -- determinism and the release record ------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_compiling_twice_gives_the_same_bytes(target: str) -> None:
    first = compiler.render(_spec(target), RELEASE)
    second = compiler.render(_spec(target), Release(*map(str, vars(RELEASE).values())))
    assert first == second
    assert first != compiler.render(
        _spec(target), Release("cancer-classifier", "4", "r")
    )


def _repo(tmp_path: Path, target: str) -> tuple[Path, specs.Spec]:
    (tmp_path / "mlops.yaml").write_text(_spec_text(target))
    return tmp_path, specs.load(tmp_path / "mlops.yaml")


def test_write_release_writes_the_record_and_the_manifests(tmp_path: Path) -> None:
    root, spec = _repo(tmp_path, serving_pod.KUBERNETES)
    written = deploy_state.write_release(root, spec, RELEASE)
    expected = _deploy_files(spec, RELEASE)
    assert sorted(written) == sorted([*expected, "deploy/production/release.json"])
    assert json.loads((root / "deploy/production/release.json").read_text()) == {
        "model": "cancer-classifier",
        "version": "3",
        "run_id": RELEASE.run_id,
    }
    for rel, text in expected.items():
        assert (root / rel).read_text() == text
    assert deploy_state.read_release(root, spec) == RELEASE
    # What compile would write is what is there.
    stale = compiler.compile_to(spec, root, check=True)
    assert [p for p in stale if p.startswith("deploy/")] == []
    assert deploy_state.write_release(root, spec, RELEASE) == []

    rollback = Release("cancer-classifier", "2", "fedcba9876543210fedcba9876543210")
    written = deploy_state.write_release(root, spec, rollback)
    assert set(written) == {
        "deploy/production/release.json",
        *(p for p in expected if p.startswith("deploy/production/")),
    }  # the Application names no version, so it stays
    assert deploy_state.read_release(root, spec) == rollback
    deployment = yaml.safe_load(
        (root / "deploy/production/deployment.yaml").read_text()
    )
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--version") + 1] == "2"


def test_write_release_refuses_a_bad_record_and_writes_nothing(tmp_path: Path) -> None:
    root, spec = _repo(tmp_path, serving_pod.KUBERNETES)
    with pytest.raises(RunError, match=r"release.json: version must be a version"):
        deploy_state.write_release(root, spec, Release("cancer-classifier", "v3", "r"))
    assert not (root / "deploy").exists()


def test_compile_check_reports_stale_manifests(tmp_path: Path) -> None:
    root, spec = _repo(tmp_path, serving_pod.KUBERNETES)
    assert not [p for p in compiler.compile_to(spec, root) if p.startswith("deploy/")]
    deploy_state.write_release(root, spec, RELEASE)
    assert compiler.compile_to(spec, root, check=True) == []

    deployment = root / "deploy/production/deployment.yaml"
    deployment.write_text(deployment.read_text().replace("'3'", "'4'"))
    assert compiler.compile_to(spec, root, check=True) == [
        "deploy/production/deployment.yaml"
    ]
    # A record edited by hand makes every manifest naming the version stale.
    record = root / "deploy/production/release.json"
    record.write_text(record.read_text().replace('"3"', '"5"'))
    assert compiler.compile_to(spec, root, check=True) == [
        f"deploy/production/{name}"
        for name in (
            "deployment.yaml",
            "horizontal-pod-autoscaler.yaml",
            "pod-disruption-budget.yaml",
            "service.yaml",
        )
    ]
    compiler.compile_to(spec, root)
    assert "- '5'" in deployment.read_text()
    assert compiler.compile_to(spec, root, check=True) == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{not json", "not JSON"),
        ('["cancer-classifier", "3"]', "got list"),
        ('{"model": "m", "version": "3"}', "got ['model', 'version']"),
        ('{"model": "m", "version": "3", "run_id": "r", "alias": "p"}', "got ['alias'"),
        ('{"model": "m", "version": 3, "run_id": "r"}', "version must be strings"),
        ('{"model": "m", "version": "latest", "run_id": "r"}', "'latest'"),
        ('{"model": "", "version": "3", "run_id": "r"}', "model is empty"),
    ],
)
def test_a_malformed_release_record_is_named(
    tmp_path: Path, text: str, error: str
) -> None:
    root, spec = _repo(tmp_path, serving_pod.KUBERNETES)
    (root / "deploy/production").mkdir(parents=True)
    (root / "deploy/production/release.json").write_text(text)
    with pytest.raises(RunError) as caught:
        deploy_state.read_release(root, spec)
    assert str(caught.value).startswith("deploy/production/release.json: ")
    assert error in str(caught.value)


# -- the image ------------------------------------------------------------------------------


def test_the_dockerfile_gives_the_pod_its_spec_and_its_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copy_at = dockerfile.index("COPY mlops.yaml ./")
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile[:copy_at], re.M)[-1]
    assert f"{workdir}/mlops.yaml" == serving_pod.SPEC_IN_IMAGE
    # The user the manifests run as is the image's own.
    assert f"USER {pod.UID}:{pod.UID}" in dockerfile
    assert f"--uid {pod.UID}" in dockerfile


def test_another_target_removes_the_old_manifests_but_not_the_teams_own(
    tmp_path: Path,
) -> None:
    root, spec = _repo(tmp_path, serving_pod.KUBERNETES)
    deploy_state.write_release(root, spec, RELEASE)
    own = root / "deploy/production/network-policy.yaml"
    own.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n")

    (root / "mlops.yaml").write_text(_spec_text(serving_pod.KSERVE))
    kserve = specs.load(root / "mlops.yaml")
    old = [
        f"deploy/production/{name}"
        for name in (
            "deployment.yaml",
            "horizontal-pod-autoscaler.yaml",
            "pod-disruption-budget.yaml",
            "service.yaml",
        )
    ]
    stale = compiler.compile_to(kserve, root, check=True)
    assert set(old) | {"deploy/production/inference-service.yaml"} <= set(stale)
    assert "deploy/production/network-policy.yaml" not in stale
    compiler.compile_to(kserve, root)
    assert sorted(p.name for p in (root / "deploy/production").iterdir()) == [
        "inference-service.yaml",
        "network-policy.yaml",
        "release.json",
    ]
    assert compiler.compile_to(kserve, root, check=True) == []

    (root / "mlops.yaml").write_text(_spec_text("local"))
    local = specs.load(root / "mlops.yaml")
    assert deploy_state.write_release(root, local, RELEASE) == [
        "deploy/production.application.yaml",
        "deploy/production/inference-service.yaml",
    ]
    assert sorted(p.name for p in (root / "deploy").rglob("*")) == [
        "network-policy.yaml",
        "production",
        "release.json",
    ]


def test_mlops_compile_check_names_a_stale_manifest(tmp_path: Path) -> None:
    root, spec = _repo(tmp_path, serving_pod.KUBERNETES)
    mlops("compile", cwd=root)
    assert not (root / "deploy").exists()  # nothing promoted yet
    deploy_state.write_release(root, spec, RELEASE)
    assert mlops("compile", "--check", cwd=root).returncode == 0
    service = root / "deploy/production/service.yaml"
    service.write_text(service.read_text().replace("5001", "5002"))
    proc = mlops("compile", "--check", cwd=root, check=False)
    assert proc.returncode == 1
    assert proc.stderr == (
        "deploy/production/service.yaml: stale; run `mlops compile` and commit it\n"
    )


def test_a_model_name_that_cannot_be_a_label_is_refused() -> None:
    doc = yaml.safe_load(_spec_text(serving_pod.KUBERNETES))
    doc["registry"]["model"] = "Cancer classifier"
    text = yaml.safe_dump(doc, sort_keys=False)
    at, line = _refused(text)
    assert at == _line_of(text, "registry", "model")
    assert "registry -> model: 'Cancer classifier' cannot be the Kubernetes " in line
    assert "label mlops.dev/model" in line
    # The local target puts no label on anything: the same name is fine there.
    doc["deploy"]["target"] = "local"
    specs.parse(yaml.safe_dump(doc, sort_keys=False))


def test_a_serving_name_longer_than_a_dns_label_is_refused() -> None:
    doc = yaml.safe_load(_spec_text(serving_pod.KUBERNETES))
    doc["project"]["name"] = "p" * 30
    doc["deploy"]["environment"] = "e" * 40
    text = yaml.safe_dump(doc, sort_keys=False)
    at, line = _refused(text)
    assert at == _line_of(text, "deploy", "environment")
    assert f"deploy -> environment: the serving name '{'p' * 30}-eee" in line
    assert "longer than 63 characters" in line
