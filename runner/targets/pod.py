"""Facts every generated pod shares: its image, its user, its hardening, its secrets.

The Argo pipeline pods and the serving pods run the same image (the
repository's Dockerfile), so they share its user and the restricted Pod
Security Standard; kept here once, so that the targets never import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.spec import Spec

# The non-root user of the Dockerfile's image; keep the two in step.
UID = 10001
LABEL_PROJECT = "app.kubernetes.io/name"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGED_BY = "mlops"


def image(spec: Spec) -> str:
    """The pipeline pods' image: `argo.image`, else what the Dockerfile builds."""
    return str(spec.argo.get("image") or f"{spec.project.name}:latest")


def pod_security_context() -> dict[str, Any]:
    """The restricted Pod Security Standard, for the whole pod."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """The restricted Pod Security Standard, for each container."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def secret_env(secrets: Mapping[str, str]) -> list[dict[str, Any]]:
    """`VAR: secret-name/key` as environment variables read by `secretKeyRef`."""
    env = []
    for var, ref in sorted(secrets.items()):
        name, key = ref.split("/", 1)
        ref_ = {"secretKeyRef": {"name": name, "key": key}}
        env.append({"name": var, "valueFrom": ref_})
    return env
