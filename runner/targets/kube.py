"""Plan + release record -> the serving manifests kept in git under `deploy/`.

`deploy.target: kubernetes` gives a Deployment, Service, HorizontalPodAutoscaler
and PodDisruptionBudget; `kserve` gives an InferenceService. Both run the same
pod (runner.targets.serving_pod) and come with an Argo CD Application that
syncs the folder. The version comes from the release record
(`deploy/<environment>/release.json`, written by `mlops promote` and `mlops
rollback`), never from an alias: the manifest names what runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.errors import RunError
from runner.plan import Plan
from runner.spec import Spec
from runner.targets.serving_pod import (
    ANNOTATION_RUN,
    CLUSTER_TARGETS,
    KSERVE,
    PORT_NAME,
    RELEASE_FILE,
    Serving,
    application_file,
    checkov_skips,
    environment_dir,
    labels,
    object_metadata,
    pod_spec,
    prometheus,
    release_labels,
    settings,
)

if TYPE_CHECKING:
    from runner.deploy_state import Release

DEPLOYMENT_FILE = "deployment.yaml"
SERVICE_FILE = "service.yaml"
HPA_FILE = "horizontal-pod-autoscaler.yaml"
PDB_FILE = "pod-disruption-budget.yaml"
INFERENCE_SERVICE_FILE = "inference-service.yaml"
CONTAINER = "server"
KSERVE_CONTAINER = "kserve-container"
KSERVE_MODE = "serving.kserve.io/deploymentMode"
# Plain Deployment, Service and HPA, no Knative (RawDeployment before 0.16).
KSERVE_STANDARD = "Standard"
IN_CLUSTER = "https://kubernetes.default.svc"


# -- manifests -----------------------------------------------------------------------


def deployment(s: Serving, spec: Spec, release: Release) -> dict[str, Any]:
    """The pods running `mlops serve --version <N>`; the autoscaler sets replicas."""
    metadata = object_metadata(s, spec, release)
    metadata["annotations"].update(checkov_skips(s))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": labels(s, spec)},
            # A new version takes traffic only once ready; none is lost.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": release_labels(s, spec, release),
                    "annotations": {
                        ANNOTATION_RUN: release.run_id,
                        **prometheus(s),
                    },
                },
                "spec": pod_spec(s, spec, release, CONTAINER),
            },
        },
    }


def service(s: Serving, spec: Spec, release: Release) -> dict[str, Any]:
    """The in-cluster address of the server, on deploy.port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(s, spec, release),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(s, spec),
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
        "metadata": object_metadata(s, spec, release),
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
        "metadata": object_metadata(s, spec, release),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(s, spec)}},
    }


def inference_service(s: Serving, spec: Spec, release: Release) -> dict[str, Any]:
    """A KServe InferenceService whose predictor is the same `mlops serve`."""
    metadata = object_metadata(s, spec, release)
    # KServe copies the InferenceService's annotations onto its pods.
    metadata["annotations"].update({KSERVE_MODE: KSERVE_STANDARD, **prometheus(s)})
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
                **pod_spec(s, spec, release, KSERVE_CONTAINER),
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
            "labels": labels(s, spec),
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
