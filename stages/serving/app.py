"""The ASGI app uvicorn runs: plain ASGI, one small handler per endpoint.

| endpoint | answers |
| --- | --- |
| ``POST /invocations`` | ``{"predictions": [...]}``, MLflow's formats in and out |
| ``GET /health``, ``/ping`` | 200 while the process is up |
| ``GET /ready`` | 200 once the model is loaded, 503 before |
| ``GET /version`` | the model, version, run, commit, data hash and predictor |
| ``GET /metrics`` | Prometheus text (see :mod:`stages.serving.metrics`) |

Errors are JSON, ``{"error_code": "BAD_REQUEST", "message": "..."}``, as
MLflow's scoring server writes them: 400 for a request that does not fit the
signature, 413 for a body over ``max_request_bytes`` (refused from its
Content-Length, or counted while it streams in), 408 for a body that has not
arrived within :data:`BODY_SECONDS`, 503 before the model is loaded. An answer
sent before the whole body was read (413, 408, 503) closes the connection. A
413's body is first read and dropped up to once more the limit, so that a
client that sends the whole body before reading still gets the answer; past
that the rest is never read. (The request head's limits are
:mod:`stages.serving.protocol`'s.)

With one worker the model is loaded in a thread after the server starts
listening, so ``/health`` and ``/ready`` answer while it loads. With several,
each worker loads before it accepts a connection: they share one socket, and
the kernel would hand requests to a worker still loading, so a request waits
in the listen backlog instead of getting a 503.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from stages import serving_gc
from stages.serving import inputs, predictor
from stages.serving.metrics import Metrics
from stages.serving.predlog import PredictionLog

CONFIG_ENV = "MLOPS_SERVING_CONFIG"
REQUEST_ID = b"x-request-id"
MAX_REQUEST_ID = 128
# A worker whose model fails to load exits with uvicorn's startup-failure code,
# so the supervisor stops instead of restarting it forever.
LOAD_FAILED = 3
JSON = b"application/json"
# A request's body must arrive within this many seconds of its head: a client
# that sends half a body, or one byte at a time, holds a connection no longer.
BODY_SECONDS = 10.0
CLOSE = (b"connection", b"close")
# A refused body is read and dropped up to this many times the limit more, so
# that a client sending it whole still gets its 413 (see App._drain).
DRAIN_FACTOR = 1

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class HttpError(Exception):
    """An answer other than 200, with MLflow's error body."""

    def __init__(
        self, status: int, code: str, message: str, close: bool = False
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.close = close  # answered before the body was read: end the connection


class Disconnected(Exception):
    """The client went away before its body arrived: nobody to answer."""


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


async def _respond(
    send: Send, status: int, body: bytes, kind: bytes = JSON,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:  # fmt: skip
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + list(extra)})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is short printable text, else a new one."""
    given = _header(scope, REQUEST_ID)
    if given and len(given) <= MAX_REQUEST_ID and given.isascii():
        text = given.decode()
        if text.isprintable() and text.strip():
            return text
    return uuid.uuid4().hex


class App:
    """One worker's server: the model, its metrics and its prediction log."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.served = config["served"]
        self.columns = tuple(
            inputs.Column(name, kind) for name, kind in self.served["columns"]
        )
        self.max_bytes = int(config["max_request_bytes"])
        self.drain_bytes = DRAIN_FACTOR * self.max_bytes
        self.predictor: predictor.Predictor | None = None
        self.log: PredictionLog | None = None
        self.metrics: Metrics | None = None
        self.created = time.monotonic()
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/invocations"): self.invocations,
            ("GET", "/health"): self.health,
            ("GET", "/ping"): self.health,
            ("GET", "/ready"): self.ready,
            ("GET", "/version"): self.version,
            ("GET", "/metrics"): self.prometheus,
        }  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        handler = self.routes.get((scope["method"], scope["path"]))
        if handler is not None:
            await handler(scope, receive, send)
            return
        known = {path for _, path in self.routes}
        status, code = (405, "BAD_REQUEST") if scope["path"] in known else (
            404, "ENDPOINT_NOT_FOUND")  # fmt: skip
        message = f"{scope['method']} {scope['path']} is not served here"
        await _respond(send, status, _json({"error_code": code, "message": message}))

    # --- lifecycle ---

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Start loading the model at startup; flush the log at shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.metrics = Metrics(
                    self.served["model"], self.served["version"],
                    classifier=self.served.get("classes") is not None,
                )  # fmt: skip
                if int(self.config["workers"]) > 1:
                    # Workers share one socket: a worker still loading would be
                    # handed requests it must refuse. Accept only once loaded.
                    await asyncio.get_running_loop().run_in_executor(None, self._load)
                else:
                    threading.Thread(
                        target=self._load, name="load-model", daemon=True
                    ).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.log is not None:
                    self.log.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _load(self) -> None:
        served = self.served
        try:
            loaded = predictor.load(served, self.columns)
            settings = self.config["prediction_log"]
            self.log = PredictionLog(
                settings["path"], sample=settings["sample"],
                max_bytes=settings["max_bytes"], backups=settings["backups"],
                seed=int(self.config.get("seed", 0)), columns=self.columns,
                model=served["model"], version=served["version"], predictor=loaded.kind,
            )  # fmt: skip
        except Exception as e:
            sys.stderr.write(
                f"serve: cannot load {served['model']} version {served['version']}: "
                f"{e}\n{traceback.format_exc()}"
            )
            sys.stderr.flush()
            os._exit(LOAD_FAILED)
        if self.metrics is not None:
            self.metrics.loaded(loaded.kind, served.get("run_id") or "")
        self.predictor = loaded  # last: from here on /ready answers 200
        sys.stderr.write(
            f"serve: {served['model']} version {served['version']} ({loaded.kind}) "
            f"ready in {time.monotonic() - self.created:.2f}s, process {os.getpid()}\n"
        )
        sys.stderr.flush()

    # --- small endpoints ---

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Alive: the process answers."""
        await _respond(send, 200, b'{"status": "ok"}')

    async def ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Ready once the model is loaded."""
        if self.predictor is None:
            await _respond(send, 503, b'{"status": "loading"}')
        else:
            await _respond(send, 200, b'{"status": "ready"}')

    async def version(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Which model this is, where it came from and how it predicts."""
        s = self.served
        body = {
            "model": s["model"],
            "version": s["version"],
            "run_id": s.get("run_id"),
            "git_commit": s.get("git_commit"),
            "git_changes": s.get("git_changes"),
            "data_md5": s.get("data_md5"),
            "predictor": self.predictor.kind if self.predictor else None,
            "onnx": s.get("onnx_status"),
            "signature": inputs.describe_columns(self.columns),
            "ready": self.predictor is not None,
        }
        await _respond(send, 200, _json(body))

    async def prometheus(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Prometheus' text format."""
        assert self.metrics is not None  # noqa: S101 - set at startup
        text, kind = self.metrics.exposition()
        await _respond(send, 200, text, kind.encode())

    # --- predictions ---

    async def body(self, scope: Scope, receive: Receive) -> bytes:
        """The request body, within :data:`BODY_SECONDS`; refused with 413 as soon
        as it is known to be too big."""
        try:
            async with asyncio.timeout(BODY_SECONDS):
                return await self._read_body(scope, receive)
        except TimeoutError:
            raise HttpError(
                408, "REQUEST_TIMEOUT",
                f"the body did not arrive within {BODY_SECONDS:g}s", close=True,
            ) from None  # fmt: skip

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            why = (
                f"the body has {int(declared)} bytes; the limit is {limit} "
                "(deploy.max_request_bytes)"
            )
            if int(declared) <= limit + self.drain_bytes:
                await self._drain(receive, int(declared))
            raise HttpError(413, "REQUEST_TOO_LARGE", why, close=True)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                if message.get("more_body", False):
                    await self._drain(receive, limit + self.drain_bytes - size)
                raise HttpError(413, "REQUEST_TOO_LARGE",
                                f"the body is over the limit of {limit} bytes "
                                "(deploy.max_request_bytes)", close=True)  # fmt: skip
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _drain(self, receive: Receive, most: int) -> None:
        """Read and drop up to ``most`` more bytes of a refused body.

        A client such as Python's http.client sends the whole body before it
        reads the answer; closing at once would reset its connection and it
        would never see the 413. A body bigger than the allowance is cut off
        (the connection is closed anyway), so this costs at most
        :data:`DRAIN_FACTOR` times the limit, within the body's time limit.
        """
        seen = 0
        while seen <= most:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def predict(self, scope: Scope, receive: Receive) -> tuple[list[Any], Any]:
        """Parse, check and predict; any problem is an :class:`HttpError`."""
        model = self.predictor
        if model is None:
            raise HttpError(
                503, "TEMPORARILY_UNAVAILABLE",
                "the model is still loading; retry when /ready answers 200",
                close=True,
            )  # fmt: skip
        data = await self.body(scope, receive)
        kind = (_header(scope, b"content-type") or b"").decode("latin-1")
        try:
            values = inputs.parse(kind, data, self.columns)
        except inputs.BadRequest as e:
            raise HttpError(400, "BAD_REQUEST", str(e)) from e
        try:
            if model.blocking:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, model.predict, values), values
            return model.predict(values), values
        except ValueError as e:
            # Rows of the right types the model still refuses (an unseen
            # category, say): the request's fault, as MLflow answers it.
            raise HttpError(
                400, "BAD_REQUEST", f"the model cannot predict these rows: {e}"
            ) from e

    async def invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /invocations``: predictions in MLflow's response shape."""
        start = time.perf_counter()
        when = datetime.now(UTC)
        rid = request_id(scope)
        code: str | None = None
        extra: tuple[tuple[bytes, bytes], ...] = ((REQUEST_ID, rid.encode()),)
        try:
            outputs, values = await self.predict(scope, receive)
            status, body = 200, _json({"predictions": outputs})
        except Disconnected:
            status, code, body = 499, "CLIENT_DISCONNECTED", b""
        except HttpError as e:
            status, code = e.status, e.code
            body = _json({"error_code": e.code, "message": e.message})
            extra += (CLOSE,) if e.close else ()
        except Exception as e:
            traceback.print_exc()
            status, code = 500, "INTERNAL_ERROR"
            body = _json({"error_code": code, "message": f"prediction failed: {e!r}"})
        if status != 499:  # noqa: PLR2004
            await _respond(send, status, body, extra=extra)
        assert self.metrics is not None  # noqa: S101 - set at startup
        self.metrics.answered(status, time.perf_counter() - start, code)
        if status == 200:  # noqa: PLR2004
            self.metrics.predicted(outputs)
            if self.log is not None and self.log.wants():
                self.log.write(rid, when, values, outputs)


def create() -> App:
    """The app factory uvicorn calls in each worker, configured from the environment."""
    app = App(json.loads(os.environ[CONFIG_ENV]))
    serving_gc()  # loaded: from here on it serves
    return app
