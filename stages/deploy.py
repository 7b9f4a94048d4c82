"""Deploy: start ``mlops serve`` on the production model and smoke-test it.

The version holding ``registry.production_alias`` is fetched and checked once
by :func:`stages.serving.fetch.prepare` (the MLmodel, its paths and the skops
file's types, through :func:`check_model` and :mod:`stages.modelfile`), and
the server is started on exactly what that check hashed (``python -m
stages.serving.server``, no second download).

``python -m stages.deploy <server flags> [--check-only]`` (``mlops deploy``)
waits for ``/ready``, sends a row of the test split (else the model's saved
input example) to ``/invocations`` and compares the answer with the model's
own prediction; ``--check-only`` then stops the server, otherwise it serves
until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd

from stages import common, modelfile, promote, run_then_leave
from stages.modelfile import Checked

KIND = "deploy"
SMOKE_ROWS = 1
# Marks the smoke test's request in the prediction log, so monitoring skips it.
SMOKE_REQUEST_ID = "mlops-deploy-smoke"
STOP_SECONDS = 15
LOG_TAIL = 15
_ANY_ADDRESS = ("", "0.0.0.0", "::")  # noqa: S104 - names, not a bind


def base_url(host: str, port: int) -> str:
    """Where to reach a server listening on ``host``: loopback for "any"."""
    reach = "127.0.0.1" if host in _ANY_ADDRESS else host
    return f"http://[{reach}]:{port}" if ":" in reach else f"http://{reach}:{port}"


def payload(frame: pd.DataFrame) -> bytes:
    """The ``dataframe_split`` request body MLflow's scoring server reads."""
    split = json.loads(frame.to_json(orient="split", index=False))
    return json.dumps({"dataframe_split": split}).encode()


def smoke_frame(params: Mapping[str, Any], model_dir: Path) -> pd.DataFrame:
    """Rows to send: the held-out split if present, else the saved input example."""
    try:
        spec = promote.evaluate_spec(params)
    except common.StageError:
        spec = None
    test = common.role_path(spec, "inputs", "test") if spec else None
    if test is not None and test.is_file():
        x, _ = common.split_xy(
            common.read_parquet(test), common.project(params)["target"]
        )
        return x.head(SMOKE_ROWS)
    example = model_dir / "serving_input_example.json"
    if not example.is_file():
        raise common.StageError(
            "nothing to smoke-test with: no test split (run `mlops run`) and the "
            "model has no serving_input_example.json"
        )
    split = json.loads(example.read_text(encoding="utf-8"))["dataframe_split"]
    return pd.DataFrame(split["data"], columns=split["columns"]).head(SMOKE_ROWS)


def same_predictions(served: Sequence[Any], local: Sequence[Any]) -> bool:
    """Equal labels, or numbers equal to float precision (a JSON round trip)."""
    import numpy as np

    if len(served) != len(local):
        return False
    try:
        return bool(np.allclose(np.asarray(served, float), np.asarray(local, float)))
    except (TypeError, ValueError):
        return [str(s) for s in served] == [str(v) for v in local]


def _http(url: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    headers["X-Request-ID"] = SMOKE_REQUEST_ID
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")


def _tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-LOG_TAIL:])


def port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        # As uvicorn does: a port in TIME_WAIT from the last server is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise common.StageError(
                f"cannot listen on {host}:{port} ({e.strerror}); pass --port or set "
                "$MLOPS_DEPLOY_PORT to a free port"
            ) from e


def start_server(config: Mapping[str, Any], log: IO[str] | None) -> Any:
    """``mlops serve``'s server in its own process group, so it can be stopped whole."""
    from stages.serving import cli

    return subprocess.Popen(
        cli.server_command(), env=cli.server_env(config), stdout=log,
        stderr=subprocess.STDOUT if log else None, start_new_session=True,
    )  # fmt: skip


def stop_server(proc: Any) -> None:
    """Stop the server and the workers it started (the whole process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader so the group can empty
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    proc.wait()


def wait_ready(url: str, proc: Any, timeout: float, log: Path | None) -> float:
    """Poll ``/ready`` until it answers 200; return the seconds it took."""
    start = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise common.StageError(
                f"the model server exited with code {proc.returncode} before it "
                f"answered /ready\n{_tail(log)}"
            )
        try:
            if _http(f"{url}/ready", timeout=2)[0] == 200:  # noqa: PLR2004
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout:
            raise common.StageError(
                f"the model server was not ready at {url}/ready within {timeout:.0f}s"
                f"\n{_tail(log)}"
            )
        time.sleep(0.1)


def smoke_test(url: str, frame: pd.DataFrame, model: Any) -> list[Any]:
    """POST ``frame`` to /invocations; the answer must match the model's own."""
    status, text = _http(f"{url}/invocations", payload(frame), timeout=30)
    if status != 200:  # noqa: PLR2004
        raise common.StageError(f"/invocations answered HTTP {status}: {text[:500]}")
    served = list(json.loads(text).get("predictions", []))
    local = list(model.predict(frame))
    if not same_predictions(served, local):
        raise common.StageError(
            f"the server predicted {served} but the model predicts {local}"
        )
    return served


def check_model(params: Mapping[str, Any], model_dir: Path) -> tuple[Any, Checked]:
    """Load the model through :mod:`stages.modelfile`'s gate with the project's
    allow-list; the model and the bytes checked. Refuses anything else."""
    return modelfile.load(model_dir, common.project_allow(params))


def serve(params: Mapping[str, Any], args: argparse.Namespace, tmp: Path) -> int:
    """Fetch and check, start, wait, smoke-test; then stop or keep serving."""
    from stages.serving import cli, fetch

    config, model = cli.prepare(params, args)
    served = config["served"]
    frame = smoke_frame(params, Path(served["model_dir"]))
    url = base_url(args.host, args.port)
    log_path = tmp / "server.log" if args.check_only else None
    name = f"{served['model']} version {served['version']}"
    common.say(KIND, f"starting {fetch.describe(served)} on {url}")
    with open(log_path or os.devnull, "w", encoding="utf-8") as log:
        proc = start_server(config, log if log_path else None)
        try:
            secs = wait_ready(url, proc, args.timeout, log_path)
            answer = smoke_test(url, frame, model)
            common.say(KIND, f"{url}/ready answered 200 after {secs:.1f}s")
            common.say(
                KIND,
                f"smoke test: POST {url}/invocations with {len(frame)} test row(s) "
                f"-> predictions {answer} (same as the model locally)",
            )
            if args.check_only:
                common.say(KIND, f"check passed; stopping the server ({name})")
                return 0
            common.say(KIND, f"serving {name} at {url}/invocations; Ctrl-C stops it")
            code = proc.wait()
            raise common.StageError(f"the model server exited with code {code}")
        finally:
            stop_server(proc)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Serve (or with ``--check-only`` just check) the production model."""
    from stages.serving import cli

    ap = argparse.ArgumentParser(prog="python -m stages.deploy")
    cli.add_server_flags(ap)
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("--check-only", action="store_true")
    args = ap.parse_args(argv)
    args.version = None  # deploy serves what holds the production alias
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A cancelled CI job or `kill` sends SIGTERM: stop the server like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        params = common.load_params()
        with tempfile.TemporaryDirectory(prefix="mlops-deploy-") as tmp:
            return serve(params, args, Path(tmp))
    except common.StageError as e:
        common.warn(KIND, str(e))
        return 1
    except KeyboardInterrupt:
        common.say(KIND, "stopped")
        return 0


if __name__ == "__main__":
    run_then_leave(main)
