"""`mlops submit`: send the compiled pipeline to an Argo Server.

Creates the WorkflowTemplate (or updates it when it exists) and submits a
Workflow that runs it at one git commit, through the Argo Server's REST API
with the argo-workflows SDK. The server, namespace and token come from the
environment (ARGO_SERVER, ARGO_NAMESPACE, ARGO_TOKEN), never from mlops.yaml,
so the spec holds no credentials. `--dry-run` prints the requests instead.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

from runner.errors import RunError
from runner.plan import Plan
from runner.targets import argo

ENV_SERVER = "ARGO_SERVER"
ENV_NAMESPACE = "ARGO_NAMESPACE"
ENV_TOKEN = "ARGO_TOKEN"  # noqa: S105 - the variable's name, not a token
ENV_INSECURE = "ARGO_INSECURE_SKIP_VERIFY"
TEMPLATES = "/api/v1/workflow-templates/{namespace}"
TEMPLATE = "/api/v1/workflow-templates/{namespace}/{name}"
WORKFLOWS = "/api/v1/workflows/{namespace}"


@dataclass(frozen=True)
class Request:
    """One call to the Argo Server, as sent on the wire."""

    method: str
    path: str
    body: dict[str, Any] | None = None

    def show(self) -> str:
        """The request as `--dry-run` prints it: method, path, then the JSON body."""
        head = f"{self.method} {self.path}"
        if self.body is None:
            return head
        return head + "\n" + json.dumps(self.body, indent=2, sort_keys=True)


class ServerError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Transport(Protocol):
    def __call__(self, request: Request) -> dict[str, Any]: ...


# -- what to send ----------------------------------------------------------------


def workflow_for(plan: Plan, repo: str, revision: str) -> dict[str, Any]:
    """The Workflow of argo/workflow.yaml, with the commit to run filled in."""
    wf = copy.deepcopy(argo.workflow(plan))
    wf["metadata"]["labels"][argo.LABEL_REVISION] = revision
    wf["spec"]["arguments"] = {
        "parameters": [
            {"name": argo.P_REPO, "value": repo},
            {"name": argo.P_REVISION, "value": revision},
        ]
    }
    return wf


def submit(
    plan: Plan, namespace: str, repo: str, revision: str, send: Transport
) -> str:
    """Create or update the template, then submit a run; return the run's name."""
    template = copy.deepcopy(argo.workflow_template(plan))
    template["metadata"]["namespace"] = namespace
    name = template["metadata"]["name"]
    create = Request(
        "POST",
        TEMPLATES.format(namespace=namespace),
        {"namespace": namespace, "template": template},
    )
    try:
        send(create)
    except ServerError as exc:
        if exc.status != HTTPStatus.CONFLICT:
            raise
        # It exists: replace it, naming the version we replace so that a
        # concurrent change is refused rather than overwritten.
        path = TEMPLATE.format(namespace=namespace, name=name)
        current = send(Request("GET", path))
        version = current.get("metadata", {}).get("resourceVersion")
        if version:
            template["metadata"]["resourceVersion"] = version
        send(Request("PUT", path, {"namespace": namespace, "template": template}))
    workflow = workflow_for(plan, repo, revision)
    workflow["metadata"]["namespace"] = namespace
    created = send(
        Request(
            "POST",
            WORKFLOWS.format(namespace=namespace),
            {"namespace": namespace, "workflow": workflow},
        )
    )
    return str(created.get("metadata", {}).get("name", ""))


# -- how to send it ----------------------------------------------------------------


def dry_run(say: Callable[[str], None]) -> Transport:
    """A transport that prints each request and answers as a new server would."""

    def send(request: Request) -> dict[str, Any]:
        say(request.show())
        body = request.body or {}
        sent = body.get("workflow") or body.get("template") or {}
        meta = sent.get("metadata", {})
        return {"metadata": {"name": meta.get("name") or meta.get("generateName", "")}}

    return send


def _server_url(env: Mapping[str, str]) -> str:
    server = env.get(ENV_SERVER, "").strip()
    if not server:
        raise RunError(
            f"{ENV_SERVER} is not set; export the Argo Server's address, "
            "e.g. ARGO_SERVER=https://localhost:2746"
        )
    if "://" not in server:
        server = "https://" + server  # the argo CLI's own default
    return server.rstrip("/")


def _model(name: str, data: dict[str, Any]) -> Any:
    """An SDK model from a plain dict, type-checked on the way."""
    from argo_workflows import models
    from argo_workflows.configuration import Configuration
    from argo_workflows.model_utils import validate_and_convert_types

    return validate_and_convert_types(
        copy.deepcopy(data),
        (getattr(models, name),),
        ["body"],
        True,
        True,
        configuration=Configuration(),
    )


def _error_message(status: int, body: bytes | str | None) -> str:
    try:
        data = json.loads(body or b"{}")
        return str(data.get("message") or data.get("error") or "")
    except (ValueError, AttributeError):
        return str(body or "")


def sdk_transport(env: Mapping[str, str]) -> Transport:
    """A transport that calls the Argo Server with the argo-workflows SDK."""
    from argo_workflows import ApiClient, Configuration
    from argo_workflows.apis import WorkflowServiceApi, WorkflowTemplateServiceApi
    from argo_workflows.exceptions import ApiException

    config = Configuration(host=_server_url(env))
    config.verify_ssl = env.get(ENV_INSECURE, "").lower() not in ("1", "true")
    config.retries = 0
    client = ApiClient(config)
    token = env.get(ENV_TOKEN, "").strip()
    if token:
        # The argo CLI's ARGO_TOKEN includes the scheme; accept it bare too.
        bearer = token if token.lower().startswith("bearer ") else f"Bearer {token}"
        client.set_default_header("Authorization", bearer)
    templates = WorkflowTemplateServiceApi(client)
    workflows = WorkflowServiceApi(client)
    raw = {"_preload_content": False, "_check_return_type": False}

    create_wf = "IoArgoprojWorkflowV1alpha1WorkflowCreateRequest"
    create_t = "IoArgoprojWorkflowV1alpha1WorkflowTemplateCreateRequest"
    update_t = "IoArgoprojWorkflowV1alpha1WorkflowTemplateUpdateRequest"

    def call(request: Request) -> Any:
        parts = request.path.split("/")
        namespace = parts[4]
        body = request.body or {}
        if request.path.startswith("/api/v1/workflows/"):
            model = _model(create_wf, body)
            return workflows.create_workflow(namespace, model, **raw)
        if request.method == "POST":
            model = _model(create_t, body)
            return templates.create_workflow_template(namespace, model, **raw)
        if request.method == "GET":
            return templates.get_workflow_template(namespace, parts[5], **raw)
        model = _model(update_t, body)
        return templates.update_workflow_template(namespace, parts[5], model, **raw)

    def send(request: Request) -> dict[str, Any]:
        try:
            response = call(request)
        except ApiException as exc:
            raise ServerError(exc.status, _error_message(exc.status, exc.body)) from exc
        data = response.data
        return dict(json.loads(data)) if data else {}

    return send


# -- errors, revision --------------------------------------------------------------


def explain(exc: ServerError, server: str, namespace: str) -> str:
    """One line that says what to fix, for an error status of the server."""
    detail = f" ({exc.message})" if exc.message else ""
    if exc.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        return (
            f"the Argo Server at {server} refused the token ({exc.status}){detail}; "
            f"set {ENV_TOKEN} to a valid token with access to namespace '{namespace}'"
        )
    if exc.status == HTTPStatus.NOT_FOUND:
        return (
            f"namespace '{namespace}' was not found on the Argo Server at {server}"
            f"{detail}; create it or set {ENV_NAMESPACE} / argo.namespace"
        )
    return f"the Argo Server at {server} answered {exc.status}{detail}"


def unreachable(exc: BaseException, server: str) -> str:
    """One line for a server that cannot be reached."""
    reason: BaseException = getattr(exc, "reason", None) or exc
    text = str(reason)
    if isinstance(reason, ConnectionRefusedError) or "Connection refused" in text:
        text = "connection refused"
    else:
        text = text.rsplit(": ", 1)[-1] or type(reason).__name__
    return (
        f"cannot reach the Argo Server at {server} ({text}); "
        f"is it running, and is {ENV_SERVER} right?"
    )


def git_output(args: list[str], what: str, flag: str) -> str:
    """A line of git's output, or a RunError that says which flag to pass instead."""
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RunError(f"cannot read {what} from git; pass {flag}") from exc
    if not out:
        raise RunError(f"cannot read {what} from git; pass {flag}")
    return out


def run(
    plan: Plan,
    env: Mapping[str, str],
    say: Callable[[str], None],
    *,
    dry: bool,
    repo: str | None = None,
    revision: str | None = None,
) -> str:
    """Submit the pipeline (or print what would be sent); return the run's name."""
    namespace = env.get(ENV_NAMESPACE) or plan.spec.argo["namespace"]
    repo = (
        repo
        or plan.spec.argo.get("repo")
        or git_output(["remote", "get-url", "origin"], "the repository URL", "--repo")
    )
    revision = revision or git_output(["rev-parse", "HEAD"], "the commit", "--revision")
    if dry:
        return submit(plan, namespace, repo, revision, dry_run(say))
    import urllib3

    server = _server_url(env)
    try:
        return submit(plan, namespace, repo, revision, sdk_transport(env))
    except ServerError as exc:
        raise RunError(explain(exc, server, namespace)) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise RunError(unreachable(exc, server)) from exc
