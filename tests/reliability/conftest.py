"""A real ``mlflow server`` on 127.0.0.1 and a fault-injecting proxy in front of it.

The stages talk to the proxy; the proxy forwards to the server unless a
:class:`Rule` matches the request, in which case it answers 403 or 500 as a
server (or MLflow's per-model permissions) would, drops the connection, loses
the answer of a request the server did act on, or runs a hook first (to stop
the server mid-run). Tests read the registry behind the proxy's back, from the
server directly, to check what really happened.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import TEST_ENV

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy recomputes.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}
FORBIDDEN = "403"  # MLflow's auth app: "Permission denied", no JSON body
FAIL = "500"
DROP = "drop"  # close the connection without an answer
LOST = "lost"  # forward, then answer 500: the server acted, the answer is lost


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """``mlflow server`` with a SQLite store and proxied artifacts; restartable."""

    store: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        """Start the server's process; :meth:`wait_up` waits until it answers."""
        with (self.store / "server.log").open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{self.store / 'mlflow.db'}",
                 "--artifacts-destination", str(self.store / "artifacts")],
                cwd=self.store, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True,
                env={**os.environ, **TEST_ENV},
            )  # fmt: skip

    def wait_up(self, seconds: float = 180) -> None:
        """Wait for /health (a busy 2-core machine has taken a minute)."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):  # noqa: S310
                    return
            except OSError:
                time.sleep(0.25)
        raise AssertionError(f"mlflow server not up at {self.url} after {seconds}s")

    def kill(self) -> None:
        """Stop the server as a crash would: SIGKILL, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        """Stop the server (its whole process group) and wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)


@dataclass
class Rule:
    """Answer requests whose method and path match with ``action``.

    ``path`` is a regular expression searched in the request's path and query.
    ``hook`` runs once, before the first matching request is handled.
    """

    method: str | None
    path: str
    action: str
    hook: Callable[[], None] | None = None
    hits: int = 0


class Proxy(ThreadingHTTPServer):
    """An HTTP/1.1 forwarding proxy on 127.0.0.1 that obeys :class:`Rule`s."""

    daemon_threads = True

    def __init__(self, upstream: Server) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fault(self, method: str | None, path: str, action: str, **kw) -> Rule:
        """Add a rule; return it (its ``hits`` count the requests it answered)."""
        rule = Rule(method, path, action, **kw)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forward everything again and forget what was seen."""
        with self.lock:
            self.rules.clear()
            self.seen.clear()

    def match(self, method: str, path: str) -> Rule | None:
        with self.lock:
            self.seen.append((method, path))
            for rule in self.rules:
                if rule.method in (None, method) and re.search(rule.path, path):
                    rule.hits += 1
                    return rule
        return None

    def count(self, method: str, path: str) -> int:
        """How many requests with this method and a path matching ``path`` came."""
        with self.lock:
            return sum(m == method and bool(re.search(path, p)) for m, p in self.seen)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Proxy

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test output is not the place for an access log

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in _HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.server.upstream.port, timeout=30
        )
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(), resp.getheaders()
        finally:
            conn.close()

    def _handle(self) -> None:
        body = self._body()
        rule = self.server.match(self.command, self.path)
        if rule is not None and rule.hook is not None:
            hook, rule.hook = rule.hook, None
            hook()
        action = rule.action if rule is not None else None
        if action == FORBIDDEN:
            self._answer(403, b"Permission denied", [("Content-Type", "text/plain")])
            return
        if action == FAIL:
            self._answer(
                500, b"Internal Server Error", [("Content-Type", "text/plain")]
            )
            return
        if action == DROP:
            self.close_connection = True
            return
        try:
            status, data, headers = self._forward(body)
        except OSError:  # nothing listens upstream: look like a server that is down
            self.close_connection = True
            return
        if action == LOST:
            self._answer(
                500, b"Internal Server Error", [("Content-Type", "text/plain")]
            )
            return
        self._answer(status, data, headers)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


@pytest.fixture(scope="module")
def mlflow_behind_proxy(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, Proxy]]:
    """One MLflow server and one proxy, shared by every test of a module.

    The server is launched, not yet up: call ``wait_up()`` before the first
    request, after any work that needs no server (it takes a while to start).
    """
    store = tmp_path_factory.mktemp("mlflow-server")
    server = Server(store)
    server.launch()
    proxy = Proxy(server)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        server.stop()
