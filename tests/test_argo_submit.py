"""`mlops submit` against a fake Argo Server that checks requests by the OpenAPI."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator

from runner import argo_submit
from tests.support import REFERENCE, ROOT, mlops, unresolved_refs

# The operations `mlops submit` calls, from the Argo Server's OpenAPI (see its README).
SWAGGER = REFERENCE / "argo-workflows-v4.1.2-swagger.json"
NAMESPACE = "mlops"
TOKEN = "Bearer good-token"  # noqa: S105 - a test value
ARGS = ("submit", "--revision", "0123abc", "--repo", "https://example.com/r.git")


@cache
def _swagger() -> dict[str, Any]:
    return dict(json.loads(SWAGGER.read_text()))


def _operation(method: str, path: str) -> dict[str, Any]:
    """The swagger operation whose path template and method match, or fail."""
    for template, ops in _swagger()["paths"].items():
        pattern = "^" + re.sub(r"\{[^/}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in ops:
            return dict(ops[method.lower()])
    raise AssertionError(f"{method} {path} is not in the Argo Server API")


def _check_body(op: dict[str, Any], body: Any) -> None:
    params = [p for p in op.get("parameters", []) if p["in"] == "body"]
    if not params:
        assert body is None, "this operation takes no body"
        return
    schema = {**params[0]["schema"], "definitions": _swagger()["definitions"]}
    errors = [e.message for e in Draft4Validator(schema).iter_errors(body)]
    assert errors == [], errors


class FakeArgo(ThreadingHTTPServer):
    """Records requests; answers as the Argo Server would for a few situations."""

    def __init__(self, status: int | None = None, existing: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.status = status  # answer every request with this error status
        self.templates: dict[str, dict[str, Any]] = {}
        self.existing = existing
        self.requests: list[tuple[str, str, Any]] = []
        self.problems: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeArgo

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._answer(status, {"code": status, "message": message})

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, self.path, body))
        try:
            _check_body(_operation(self.command, self.path), body)
        except AssertionError as exc:
            self.server.problems.append(f"{self.command} {self.path}: {exc}")
            self._error(400, str(exc))
            return
        if self.server.status:
            self._error(self.server.status, "from the test")
            return
        if self.headers.get("Authorization") != TOKEN:
            self._error(401, "token not valid")
            return
        self._route(self.command, self.path.split("/")[3:], body)

    def _route(self, method: str, parts: list[str], body: Any) -> None:
        kind, ns = parts[0], parts[1]
        assert ns == NAMESPACE
        store = self.server.templates
        if kind == "workflows":
            wf = json.loads(json.dumps(body["workflow"]))  # the record stays as sent
            wf["metadata"]["name"] = wf["metadata"]["generateName"] + "x7k2q"
            self._answer(200, wf)
        elif method == "POST":
            name = body["template"]["metadata"]["name"]
            if self.server.existing or name in store:
                self._error(409, f'workflowtemplates "{name}" already exists')
                return
            store[name] = {**body["template"]}
            store[name]["metadata"] = {
                **store[name]["metadata"],
                "resourceVersion": "1",
            }
            self._answer(200, store[name])
        elif method == "GET":
            self._answer(200, {"metadata": {"name": parts[2], "resourceVersion": "41"}})
        else:  # PUT: the update must name the version it replaces
            if body["template"]["metadata"].get("resourceVersion") != "41":
                self._error(409, "the object has been modified")
                return
            self._answer(200, body["template"])

    do_GET = do_POST = do_PUT = _handle


def _serve(server: FakeArgo) -> Iterator[FakeArgo]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mlops.yaml").write_bytes((ROOT / "mlops.yaml").read_bytes())
    return tmp_path


def _submit(
    project: Path, monkeypatch: pytest.MonkeyPatch, url: str, *extra: str
) -> Any:
    monkeypatch.setenv("ARGO_SERVER", url)
    monkeypatch.setenv("ARGO_TOKEN", TOKEN)
    monkeypatch.delenv("ARGO_NAMESPACE", raising=False)
    return mlops(*ARGS, *extra, cwd=project, check=False)


def test_creates_the_template_and_submits_a_run(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for server in _serve(FakeArgo()):
        proc = _submit(project, monkeypatch, server.url)
        assert proc.returncode == 0, proc.stderr
        assert server.problems == []
        assert [(m, p) for m, p, _ in server.requests] == [
            ("POST", "/api/v1/workflow-templates/mlops"),
            ("POST", "/api/v1/workflows/mlops"),
        ]
        wf = server.requests[1][2]["workflow"]
        assert wf["spec"]["workflowTemplateRef"] == {"name": "cancer-classifier"}
        assert wf["spec"]["arguments"]["parameters"] == [
            {"name": "repo", "value": "https://example.com/r.git"},
            {"name": "revision", "value": "0123abc"},
        ]
        assert wf["metadata"]["labels"]["mlops.dev/revision"] == "0123abc"
        assert proc.stdout.strip() == "submitted workflow cancer-classifier-x7k2q"


def test_updates_an_existing_template_with_its_resource_version(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for server in _serve(FakeArgo(existing=True)):
        proc = _submit(project, monkeypatch, server.url)
        assert proc.returncode == 0, proc.stderr
        assert server.problems == []
        assert [(m, p) for m, p, _ in server.requests] == [
            ("POST", "/api/v1/workflow-templates/mlops"),
            ("GET", "/api/v1/workflow-templates/mlops/cancer-classifier"),
            ("PUT", "/api/v1/workflow-templates/mlops/cancer-classifier"),
            ("POST", "/api/v1/workflows/mlops"),
        ]


def test_dry_run_prints_exactly_what_the_server_receives(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for server in _serve(FakeArgo()):
        assert _submit(project, monkeypatch, server.url).returncode == 0
        received = server.requests
    monkeypatch.delenv("ARGO_SERVER")
    proc = mlops(*ARGS, "--dry-run", cwd=project)
    assert _parse_dry_run(proc.stdout) == received


def _parse_dry_run(text: str) -> list[tuple[str, str, Any]]:
    requests: list[tuple[str, str, Any]] = []
    decoder = json.JSONDecoder()
    rest = text
    while rest.strip():
        head, _, rest = rest.lstrip().partition("\n")
        method, path = head.split(" ")
        body, end = decoder.raw_decode(rest.lstrip())
        rest = rest.lstrip()[end:]
        requests.append((method, path, body))
    return requests


def test_a_server_that_is_down_is_one_clear_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _submit(project, monkeypatch, f"http://127.0.0.1:{port}")
    assert proc.returncode == 1
    assert proc.stderr == (
        f"mlops: error: cannot reach the Argo Server at http://127.0.0.1:{port} "
        "(connection refused); is it running, and is ARGO_SERVER right?\n"
    )


def test_a_bad_token_is_one_clear_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for server in _serve(FakeArgo()):
        monkeypatch.setenv("ARGO_SERVER", server.url)
        monkeypatch.setenv("ARGO_TOKEN", "wrong")
        proc = mlops(*ARGS, cwd=project, check=False)
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert (
            "refused the token (401) (token not valid); set ARGO_TOKEN" in proc.stderr
        )


@pytest.mark.parametrize("status", [403, 404])
def test_forbidden_and_missing_namespace_are_one_clear_line(
    project: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    for server in _serve(FakeArgo(status=status)):
        proc = _submit(project, monkeypatch, server.url)
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        expected = {
            403: "refused the token (403)",
            404: "namespace 'mlops' was not found on the Argo Server",
        }[status]
        assert expected in proc.stderr


def test_the_namespace_comes_from_the_environment_first(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARGO_NAMESPACE", "team-a")
    proc = mlops(*ARGS, "--dry-run", cwd=project)
    assert [p for _, p, _ in _parse_dry_run(proc.stdout)] == [
        "/api/v1/workflow-templates/team-a",
        "/api/v1/workflows/team-a",
    ]


def test_the_copied_api_is_complete() -> None:
    assert unresolved_refs(_swagger()) == []
    for method, path in [
        ("POST", argo_submit.TEMPLATES),
        ("GET", argo_submit.TEMPLATE),
        ("PUT", argo_submit.TEMPLATE),
        ("POST", argo_submit.WORKFLOWS),
    ]:
        _operation(method, path.format(namespace=NAMESPACE, name="n"))


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"templates": {}}, "{} is not of type 'array'"),
        ({"templates": [{"container": {"env": [{"name": 3}]}}]}, "3 is not of type"),
        ({"templates": [{"container": {"env": [{"value": "x"}]}}]}, "'name' is a"),
    ],
)
def test_the_fake_server_rejects_a_body_the_api_does_not_take(
    spec: dict[str, Any], error: str
) -> None:
    op = _operation("POST", argo_submit.WORKFLOWS.format(namespace=NAMESPACE))
    _check_body(op, {"workflow": {"metadata": {"generateName": "w-"}, "spec": {}}})
    with pytest.raises(AssertionError, match=re.escape(error)):
        _check_body(op, {"workflow": {"metadata": {}, "spec": spec}})


def test_the_fake_server_rejects_a_body_where_the_api_takes_none() -> None:
    get = _operation("GET", argo_submit.TEMPLATE.format(namespace=NAMESPACE, name="n"))
    with pytest.raises(AssertionError, match="takes no body"):
        _check_body(get, {"workflow": {}})


def test_help_does_not_import_the_sdk() -> None:
    import subprocess
    import sys

    code = "import sys, runner.cli; runner.cli.parser(); print('argo_workflows' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
