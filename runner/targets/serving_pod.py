"""What both cluster targets share: their names, settings and serving pod.

The pod runs `mlops serve --version <N>` in the repository's image, which
fetches that version from the MLflow registry when it starts; it meets the
restricted Pod Security Standard with a read-only root filesystem. Pure, like
every target: the spec and the release record in, data out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from runner.errors import Problem, SpecError
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
from stages.tracking import TRACKING_ENV

if TYPE_CHECKING:
    from runner.deploy_state import Release

KUBERNETES = "kubernetes"
KSERVE = "kserve"
CLUSTER_TARGETS = (KUBERNETES, KSERVE)

DEPLOY_DIR = "deploy"
RELEASE_FILE = "release.json"
# Beside the folder it syncs, not in it: Argo CD would otherwise manage (and
# could prune) its own Application. No environment folder can be named like
# this: environment names have no dots.
APPLICATION_SUFFIX = ".application.yaml"

# Where the Dockerfile copies mlops.yaml: a pod has no checkout.
SPEC_IN_IMAGE = "/opt/mlops/mlops.yaml"
LISTEN_ALL = "0.0.0.0"  # noqa: S104 - a pod's only interface is its own
KSERVE_PORT = 8080  # KServe's convention for a custom predictor
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
HOSTNAME = "kubernetes.io/hostname"

LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MODEL = "mlops.dev/model"
LABEL_VERSION = "mlops.dev/model-version"
ANNOTATION_RUN = "mlops.dev/run-id"
CHECKOV_SKIP = "checkov.io/skip"
MAX_NAME = 63  # a Service name and a label value are DNS labels
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


def _is_local(uri: str) -> bool:
    return urlsplit(uri).scheme in ("", "file", "sqlite")


def _secrets(spec: Spec) -> dict[str, str]:
    """The serving pods' secrets: deploy.secrets, else every stage's argo.secrets."""
    given = spec.deploy.get("secrets")
    return dict(spec.argo.get("secrets", {}) if given is None else given)


def problems(spec: Spec) -> list[tuple[tuple[str, ...], str]]:
    """What would make a cluster target's manifests useless, by key path.

    `runner.checks` reports these at their lines when the spec is loaded, so
    `mlops validate` catches them; a spec built without its document still
    fails in :func:`settings`.
    """
    if spec.deploy["target"] not in CLUSTER_TARGETS:
        return []
    deploy = spec.deploy
    argocd = nested_defaults("deploy", "argocd", deploy.get("argocd"))
    argocd.setdefault("repo", spec.argo.get("repo", ""))
    replicas = nested_defaults("deploy", "replicas", deploy.get("replicas"))
    secrets = _secrets(spec)
    found: list[tuple[tuple[str, ...], str]] = []
    if not argocd["repo"]:
        found.append((
            ("deploy", "argocd", "repo"),
            "the Argo CD Application needs the git URL it syncs "
            f"{environment_dir(spec)}/ from; set deploy.argocd.repo or argo.repo",
        ))  # fmt: skip
    if _is_local(spec.storage.tracking_uri) and TRACKING_ENV not in secrets:
        found.append((
            ("deploy", "target"),
            "serving pods fetch the model from MLflow, and "
            f"{spec.storage.tracking_uri!r} is a file on this machine; give "
            f"{TRACKING_ENV} in deploy.secrets or argo.secrets "
            f"(e.g. {TRACKING_ENV}: mlflow/uri) "
            "or set storage.mlflow.tracking_uri to the tracking server's URL",
        ))  # fmt: skip
    if replicas["min"] > replicas["max"]:
        found.append((
            ("deploy", "replicas"),
            f"min ({replicas['min']}) is more than max ({replicas['max']})",
        ))  # fmt: skip
    if len(serving_name(spec)) > MAX_NAME:
        found.append((
            ("deploy", "environment"),
            f"the serving name {serving_name(spec)!r} is longer than {MAX_NAME} "
            "characters; shorten project.name or deploy.environment",
        ))  # fmt: skip
    model = spec.registry["model"]
    if len(model) > MAX_NAME or not LABEL_VALUE.match(model):
        found.append((
            ("registry", "model"),
            f"{model!r} cannot be the Kubernetes label {LABEL_MODEL} that the "
            f"{deploy['target']} target puts on every serving resource: at most "
            f"{MAX_NAME} letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit",
        ))  # fmt: skip
    return found


def settings(spec: Spec) -> Serving:
    """The deploy settings with their defaults; SpecError when a pod cannot work."""
    deploy = spec.deploy
    argocd = nested_defaults("deploy", "argocd", deploy.get("argocd"))
    argocd.setdefault("repo", spec.argo.get("repo", ""))
    replicas = nested_defaults("deploy", "replicas", deploy.get("replicas"))
    found = problems(spec)
    if found:
        # Only a spec built without its document gets here (checks.py reports
        # these at their lines): the key path says what to fix.
        raise SpecError(spec.filename, [Problem(1, 1, p, m) for p, m in found])
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
        resources=nested_defaults("deploy", "resources", deploy.get("resources")),
        secrets=_secrets(spec),
        argocd=argocd,
    )


# -- pieces ------------------------------------------------------------------------


def labels(s: Serving, spec: Spec) -> dict[str, str]:
    """Labels that never change between releases: the Deployment's selector."""
    return {
        LABEL_PROJECT: spec.project.name,
        LABEL_INSTANCE: s.name,
        LABEL_MANAGED: MANAGED_BY,
    }


def release_labels(s: Serving, spec: Spec, release: Release) -> dict[str, str]:
    """The stable labels plus the model and version this release serves."""
    return {
        **labels(s, spec),
        LABEL_MODEL: release.model,
        LABEL_VERSION: release.version,
    }


def object_metadata(s: Serving, spec: Spec, release: Release) -> dict[str, Any]:
    """A serving resource's metadata: its name, labels and the MLflow run."""
    return {
        "name": s.name,
        "namespace": s.namespace,
        "labels": release_labels(s, spec, release),
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


def prometheus(s: Serving) -> dict[str, str]:
    """The annotations Prometheus' Kubernetes discovery scrapes pods by."""
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


def pod_spec(
    s: Serving, spec: Spec, release: Release, container: str
) -> dict[str, Any]:
    """The serving pod: one hardened `mlops serve` container and its scratch space."""
    return {
        # The server never calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [_container(s, release, container)],
        "volumes": [{"name": v, "emptyDir": {}} for v in VOLUMES],
        # Replicas on one node would all go down with it.
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": HOSTNAME,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": labels(s, spec)},
            }
        ],
    }
