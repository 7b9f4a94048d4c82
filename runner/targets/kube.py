"""Plan + release record -> the serving manifests kept in git under `deploy/`.

`deploy.target: kubernetes` gives a Deployment, Service, HorizontalPodAutoscaler
and PodDisruptionBudget; `kserve` gives an InferenceService. Both run
`mlops serve --version <N>` in the repository's image, which fetches that
version from the MLflow registry when the pod starts, and both come with an
Argo CD Application that syncs the folder. The version comes from the release
record (`deploy/<environment>/release.json`, written by `mlops promote` and
`mlops rollback`), never from an alias: the manifest names what runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from runner.errors import Problem, RunError, SpecError
from runner.plan import Plan
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

if TYPE_CHECKING:
    from runner.deploy_state import Release

KUBERNETES = "kubernetes"
KSERVE = "kserve"
CLUSTER_TARGETS = (KUBERNETES, KSERVE)

DEPLOY_DIR = "deploy"
RELEASE_FILE = "release.json"
DEPLOYMENT_FILE = "deployment.yaml"
SERVICE_FILE = "service.yaml"
HPA_FILE = "horizontal-pod-autoscaler.yaml"
PDB_FILE = "pod-disruption-budget.yaml"
INFERENCE_SERVICE_FILE = "inference-service.yaml"
# Beside the folder it syncs, not in it: Argo CD would otherwise manage (and
# could prune) its own Application. No environment folder can be named like
# this: environment names have no dots.
APPLICATION_SUFFIX = ".application.yaml"

# Until schema/ states it as deploy.resources' default, the one place it is.
SERVING_RESOURCES = {"cpu": "1", "memory": "1Gi"}
# Where the Dockerfile copies mlops.yaml: a pod has no checkout.
SPEC_IN_IMAGE = "/opt/mlops/mlops.yaml"
LISTEN_ALL = "0.0.0.0"  # noqa: S104 - a pod's only interface is its own
KSERVE_PORT = 8080  # KServe's convention for a custom predictor
CONTAINER = "server"
KSERVE_CONTAINER = "kserve-container"
PORT_NAME = "http"
# The root filesystem is read-only: these are the only places a pod writes.
TMP_DIR = "/tmp"  # noqa: S108 - an emptyDir of the pod's own
PREDICTIONS_DIR = "/var/lib/mlops/predictions"
VOLUMES = {"tmp": TMP_DIR, "predictions": PREDICTIONS_DIR}

HEALTH_PATH = "/health"
READY_PATH = "/ready"
METRICS_PATH = "/metrics"
# The model is downloaded and checked before /ready answers 200: five
# minutes before the kubelet gives up and restarts the container.
STARTUP_PERIOD = 5
STARTUP_FAILURES = 60

LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MODEL = "mlops.dev/model"
LABEL_VERSION = "mlops.dev/model-version"
ANNOTATION_RUN = "mlops.dev/run-id"
CHECKOV_SKIP = "checkov.io/skip"
KSERVE_MODE = "serving.kserve.io/deploymentMode"
# Plain Deployment, Service and HPA, no Knative (RawDeployment before 0.16).
KSERVE_STANDARD = "Standard"
IN_CLUSTER = "https://kubernetes.default.svc"
MAX_NAME = 63  # a Service name and a label value are DNS labels
TRACKING_URI = "MLFLOW_TRACKING_URI"
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Serving:
    """The deploy settings of a cluster target, every default resolved."""

    target: str
    environment: str
    name: str
    namespace: str
    image: str
    port: int
    workers: int
    replicas: dict[str, int]
    resources: dict[str, str]
    secrets: dict[str, str]
    argocd: dict[str, str]


# -- names and paths ------------------------------------------------------------


def environment_dir(spec: Spec) -> str:
    """`deploy/<environment>`: the folder Argo CD syncs."""
    return f"{DEPLOY_DIR}/{spec.deploy['environment']}"


def application_file(spec: Spec) -> str:
    """The Argo CD Application's file, beside the folder it syncs."""
    return f"{DEPLOY_DIR}/{spec.deploy['environment']}{APPLICATION_SUFFIX}"


def serving_name(spec: Spec) -> str:
    """The name of every serving resource: `<project>-<environment>`."""
    return f"{spec.project.name}-{spec.deploy['environment']}"


def _problem(path: tuple[str, ...], message: str) -> Problem:
    # The spec's positions are gone by now; the key path says what to fix.
    return Problem(1, 1, path, message)


def _is_local(uri: str) -> bool:
    return urlsplit(uri).scheme in ("", "file", "sqlite")


def settings(spec: Spec) -> Serving:
    """The deploy settings with their defaults; SpecError when a pod cannot work."""
    deploy = spec.deploy
    secrets = dict(spec.argo.get("secrets", {}))
    argocd = nested_defaults("deploy", "argocd", deploy.get("argocd"))
    argocd.setdefault("repo", spec.argo.get("repo", ""))
    replicas = nested_defaults("deploy", "replicas", deploy.get("replicas"))
    found = []
    if not argocd["repo"]:
        found.append(
            _problem(
                ("deploy", "argocd", "repo"),
                "the Argo CD Application needs the git URL it syncs "
                f"{environment_dir(spec)}/ from; set deploy.argocd.repo or argo.repo",
            )
        )
    if _is_local(spec.storage.tracking_uri) and TRACKING_URI not in secrets:
        found.append(
            _problem(
                ("deploy", "target"),
                "serving pods fetch the model from MLflow, and "
                f"{spec.storage.tracking_uri!r} is a file on this machine; give "
                f"{TRACKING_URI} in argo.secrets (e.g. {TRACKING_URI}: mlflow/uri) "
                "or set storage.mlflow.tracking_uri to the tracking server's URL",
            )
        )
    if replicas["min"] > replicas["max"]:
        found.append(
            _problem(
                ("deploy", "replicas"),
                f"min ({replicas['min']}) is more than max ({replicas['max']})",
            )
        )
    if len(serving_name(spec)) > MAX_NAME:
        found.append(
            _problem(
                ("deploy", "environment"),
                f"the serving name {serving_name(spec)!r} is longer than {MAX_NAME} "
                "characters; shorten project.name or deploy.environment",
            )
        )
    if found:
        raise SpecError(spec.filename, found)
    kserve = deploy["target"] == KSERVE
    return Serving(
        target=deploy["target"],
        environment=deploy["environment"],
        name=serving_name(spec),
        namespace=str(deploy.get("namespace") or spec.argo["namespace"]),
        image=str(deploy.get("image") or image(spec)),
        port=KSERVE_PORT if kserve else int(deploy["port"]),
        workers=int(deploy["workers"]),
        replicas=replicas,
        resources={
            **SERVING_RESOURCES,
            **nested_defaults("deploy", "resources", deploy.get("resources")),
        },
        secrets=secrets,
        argocd=argocd,
    )


# -- pieces ------------------------------------------------------------------------


def _labels(s: Serving, spec: Spec) -> dict[str, str]:
    """Labels that never change between releases: the Deployment's selector."""
    return {
        LABEL_PROJECT: spec.project.name,
        LABEL_INSTANCE: s.name,
        LABEL_MANAGED: MANAGED_BY,
    }


def _release_labels(s: Serving, spec: Spec, release: Release) -> dict[str, str]:
    return {
        **_labels(s, spec),
        LABEL_MODEL: release.model,
        LABEL_VERSION: release.version,
    }


def _metadata(s: Serving, spec: Spec, release: Release) -> dict[str, Any]:
    return {
        "name": s.name,
        "namespace": s.namespace,
        "labels": _release_labels(s, spec, release),
        "annotations": {ANNOTATION_RUN: release.run_id},
    }


def pinned_by_digest(ref: str) -> bool:
    """Whether an image reference names its content (`name@sha256:...`)."""
    return "@sha256:" in ref


def _tag(ref: str) -> str:
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def checkov_skips(s: Serving) -> dict[str, str]:
    """Checkov's checks this manifest cannot meet, each with the reason why."""
    reasons = []
    if not pinned_by_digest(s.image):
        reasons.append(
            "CKV_K8S_43=the image is given by tag; the model is pinned by "
            "--version; set deploy.image to name@sha256:... to pin the code too"
        )
        if _tag(s.image) in ("", "latest"):
            reasons.append(
                f"CKV_K8S_14={s.image} is the image `docker build` makes for a local "
                "cluster (kind load); set deploy.image for a real one"
            )
    if s.secrets:
        reasons.append(
            "CKV_K8S_35=MLflow and the object-store clients read the tracking URI "
            "and credentials from environment variables"
        )
    reasons.append(
        "CKV2_K8S_6=which clients may call the model is the cluster's network "
        "policy to decide; the pod listens on the one serving port"
    )
    return {f"{CHECKOV_SKIP}{i}": r for i, r in enumerate(reasons, start=1)}


def serve_command(s: Serving, release: Release) -> list[str]:
    """`mlops serve` of the released version, on every interface of the pod."""
    return [
        "mlops",
        "serve",
        *("-f", SPEC_IN_IMAGE),
        *("--version", release.version),
        *("--host", LISTEN_ALL),
        *("--port", str(s.port)),
        *("--workers", str(s.workers)),
        *("--prediction-log", PREDICTIONS_DIR),
    ]


def _probe(path: str, s: Serving, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": s.port},
        "periodSeconds": period,
        "failureThreshold": failures,
    }


def _prometheus(s: Serving) -> dict[str, str]:
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(s.port),
        "prometheus.io/path": METRICS_PATH,
    }


def _container(s: Serving, release: Release, name: str) -> dict[str, Any]:
    env = [{"name": "HOME", "value": TMP_DIR}]  # the image's HOME is read-only
    return {
        "name": name,
        "image": s.image,
        "imagePullPolicy": "Always",
        "command": serve_command(s, release),
        "ports": [{"name": PORT_NAME, "containerPort": s.port, "protocol": "TCP"}],
        "env": env + secret_env(s.secrets),
        "resources": {"requests": dict(s.resources), "limits": dict(s.resources)},
        # Liveness only after the model loaded: startup covers the download.
        "startupProbe": _probe(READY_PATH, s, STARTUP_PERIOD, STARTUP_FAILURES),
        "readinessProbe": _probe(READY_PATH, s, 5, 3),
        "livenessProbe": _probe(HEALTH_PATH, s, 10, 3),
        "securityContext": {
            **container_security_context(),
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [{"name": v, "mountPath": p} for v, p in VOLUMES.items()],
    }


def _pod_spec(s: Serving, release: Release, container: str) -> dict[str, Any]:
    return {
        # The server never calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [_container(s, release, container)],
        "volumes": [{"name": v, "emptyDir": {}} for v in VOLUMES],
    }


# -- manifests -----------------------------------------------------------------------


def deployment(s: Serving, spec: Spec, release: Release) -> dict[str, Any]:
    """The pods running `mlops serve --version <N>`; the autoscaler sets replicas."""
    metadata = _metadata(s, spec, release)
    metadata["annotations"].update(checkov_skips(s))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": _labels(s, spec)},
            # A new version takes traffic only once ready; none is lost.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": _release_labels(s, spec, release),
                    "annotations": {
                        ANNOTATION_RUN: release.run_id,
                        **_prometheus(s),
                    },
                },
                "spec": _pod_spec(s, release, CONTAINER),
            },
        },
    }


def service(s: Serving, spec: Spec, release: Release) -> dict[str, Any]:
    """The in-cluster address of the server, on deploy.port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(s, spec, release),
        "spec": {
            "type": "ClusterIP",
            "selector": _labels(s, spec),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": s.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def autoscaler(s: Serving, spec: Spec, release: Release) -> dict[str, Any]:
    """Replicas between deploy.replicas.min and max, on CPU."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(s, spec, release),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": s.name,
            },
            "minReplicas": s.replicas["min"],
            "maxReplicas": s.replicas["max"],
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": s.replicas["cpu_utilization"],
                        },
                    },
                }
            ],
        },
    }


def disruption_budget(s: Serving, spec: Spec, release: Release) -> dict[str, Any]:
    """A node drain takes one pod at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(s, spec, release),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(s, spec)}},
    }


def inference_service(s: Serving, spec: Spec, release: Release) -> dict[str, Any]:
    """A KServe InferenceService whose predictor is the same `mlops serve`."""
    metadata = _metadata(s, spec, release)
    # KServe copies the InferenceService's annotations onto its pods.
    metadata["annotations"].update({KSERVE_MODE: KSERVE_STANDARD, **_prometheus(s)})
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "minReplicas": s.replicas["min"],
                "maxReplicas": s.replicas["max"],
                "scaleMetric": "cpu",
                "scaleTarget": s.replicas["cpu_utilization"],
                **_pod_spec(s, release, KSERVE_CONTAINER),
            }
        },
    }


def application(s: Serving, spec: Spec) -> dict[str, Any]:
    """The Argo CD Application that keeps the cluster equal to the folder in git."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": s.name,
            "namespace": s.argocd["namespace"],
            "labels": _labels(s, spec),
        },
        "spec": {
            "project": s.argocd["project"],
            "source": {
                "repoURL": s.argocd["repo"],
                "targetRevision": s.argocd["revision"],
                "path": environment_dir(spec),
                # The release record is state for mlops, not a manifest.
                "directory": {"exclude": RELEASE_FILE},
            },
            "destination": {"server": IN_CLUSTER, "namespace": s.namespace},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
        },
    }


def _check_release(spec: Spec, release: Release) -> None:
    model = spec.registry["model"]
    if release.model != model:
        raise RunError(
            f"{environment_dir(spec)}/{RELEASE_FILE} names model {release.model!r} "
            f"but registry.model is {model!r}; the server would load the wrong "
            "model: promote a version of it (mlops promote) or fix registry.model"
        )
    if len(model) > MAX_NAME or not LABEL_VALUE.match(model):
        raise RunError(
            f"registry.model {model!r} cannot be the Kubernetes label {LABEL_MODEL}: "
            f"at most {MAX_NAME} letters, digits, '-', '_' or '.', starting and "
            "ending with a letter or digit"
        )


def compile_plan(plan: Plan, release: Release | None) -> dict[str, dict[str, Any]]:
    """The serving manifests of a cluster target; none before the first release."""
    spec = plan.spec
    if spec.deploy["target"] not in CLUSTER_TARGETS:
        return {}
    s = settings(spec)
    if release is None:
        return {}
    _check_release(spec, release)
    folder = environment_dir(spec)
    if s.target == KSERVE:
        files = {INFERENCE_SERVICE_FILE: inference_service(s, spec, release)}
    else:
        files = {
            DEPLOYMENT_FILE: deployment(s, spec, release),
            SERVICE_FILE: service(s, spec, release),
            HPA_FILE: autoscaler(s, spec, release),
            PDB_FILE: disruption_budget(s, spec, release),
        }
    return {
        **{f"{folder}/{name}": data for name, data in files.items()},
        application_file(spec): application(s, spec),
    }
