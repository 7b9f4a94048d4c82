"""What MLflow's errors mean: "absent" only when the registry says so.

A look-up that MLflow refuses (403), that fails (500) or that times out is not
"no such model": reading it as absent would let a ``max_drop`` gate pass
against no production model, or register a version twice. Callers treat
anything but :func:`absent` as a failure: :func:`failure` turns it into one
line naming the server, the call, MLflow's error code and what to do, and
:func:`guarded` does so for whatever a command's body lets escape.
"""

from __future__ import annotations

import functools
import os
import re
import traceback
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from stages import common, tracking

P = ParamSpec("P")
T = TypeVar("T")
# MLflow's codes for a caller the server does not let in (HTTP 401/403).
DENIED = ("PERMISSION_DENIED", "UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED")
_STAGES = str(Path(__file__).resolve().parent)
_MAX_DETAIL = 300
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def absent(error: Any, what: str = "") -> bool:
    """Whether an MlflowException says the thing looked up does not exist.

    MLflow answers a missing model with RESOURCE_DOES_NOT_EXIST, but a missing
    alias with INVALID_PARAMETER_VALUE "Registered model alias X not found.".
    """
    code = getattr(error, "error_code", "")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    text = str(getattr(error, "message", error)).lower()
    return bool(
        what
        and code == "INVALID_PARAMETER_VALUE"
        and what in text
        and "not found" in text
    )


def server() -> str:
    """The tracking URI in use, without any user name or password in it."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    parts = urllib.parse.urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        uri = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return uri


def _code(error: BaseException) -> str:
    code = getattr(error, "error_code", None)
    if code:
        return str(code)
    response = getattr(error, "response", None)  # requests' HTTPError
    status = getattr(response, "status_code", None)
    return f"HTTP {status}" if status else type(error).__name__


def _detail(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    text = re.sub(r"\s+", " ", text)
    # MLflow's message repeats the URL, user name and password included.
    text = _USERINFO.sub(r"\1", text)
    if len(text) > _MAX_DETAIL:
        text = text[:_MAX_DETAIL] + "..."
    return text


def _call(error: BaseException) -> str:
    """The innermost line of this package the error passed through."""
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if f.filename.startswith(_STAGES)
    ]
    if not frames:
        return "a call to MLflow"
    frame = frames[-1]
    where = f"{Path(frame.filename).relative_to(Path(_STAGES).parent)}:{frame.lineno}"
    return f"`{(frame.line or '').strip()}` ({where})"


def advice(code: str, uri: str) -> str:
    """What to do about a failed call, by MLflow's error code."""
    if code in DENIED or code in ("HTTP 401", "HTTP 403"):
        return (
            "check the credentials (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD) and that they may read and write this "
            "registered model, then run again"
        )
    retries = os.environ.get(
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        tracking.CLIENT_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"],
    )
    return (
        f"check that the server answers ({uri.rstrip('/')}/health for an HTTP "
        f"server) and run again; the client gave up after {retries} retries "
        "(MLFLOW_HTTP_REQUEST_MAX_RETRIES and MLFLOW_HTTP_REQUEST_TIMEOUT set how "
        "long it tries)"
    )


def failure(error: BaseException, call: str | None = None) -> common.StageError:
    """One line: which server, which call, MLflow's error code, what to do."""
    uri = server()
    code = _code(error)
    return common.StageError(
        f"the MLflow server at {uri} failed {call or _call(error)}: {code}: "
        f"{_detail(error)}; {advice(code, uri)}"
    )


def faults() -> tuple[type[BaseException], ...]:
    """The exception types a failing MLflow server or its HTTP layer raise."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.exceptions.RequestException)


def guarded(body: Callable[P, T]) -> Callable[P, T]:
    """``body``, with any MLflow or HTTP error it lets escape made a StageError."""

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        caught = faults()
        try:
            return body(*args, **kwargs)
        except caught as e:
            raise failure(e) from e

    return run


def by_alias(client: Any, name: str, alias: str) -> Any | None:
    """The model version holding ``alias``, or None when the registry says none does.

    Only the registry's own "does not exist" answers mean absent: a refused
    (403) or failing (500) look-up must not read as "no production model yet".
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if absent(e, "alias"):
            return None
        raise failure(e, f"get_model_version_by_alias({name!r}, {alias!r})") from e
