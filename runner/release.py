"""`mlops promote`, `history`, `serve` and `deploy`: run the release modules.

The work needs MLflow and scikit-learn, which the runner never imports; like
DVC running a stage, the CLI starts ``python -m stages.<module>`` from the
repository root with :func:`runner.engine.environment` and passes its exit
code through.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.errors import RunError

PORT_ENV = "MLOPS_DEPLOY_PORT"
# The flag of stages.promote and stages.rollback naming the file where they
# write, once done, what holds the production alias (runner.gitops.after).
RELEASE_FLAG = "--release-file"
# How long a module gets to clean up (stop its server) after Ctrl-C.
GRACE_SECONDS = 30


def add_flags(c: argparse.ArgumentParser, name: str) -> None:
    """The options of the release commands."""
    if name == "history":
        c.add_argument(
            "--at",
            metavar="WHEN",
            help="which model served at this date or UTC datetime (a date means "
            "the end of that day), trained on which data and code",
        )
        c.add_argument("--all", action="store_true", help="show refused ones too")
        c.add_argument("--json", action="store_true", help="one JSON entry per line")
    if name in ("serve", "deploy"):
        c.add_argument("--host", help="address to listen on (default: deploy.host)")
        c.add_argument(
            "--port",
            type=int,
            help=f"port to listen on (default: ${PORT_ENV}, else deploy.port)",
        )
        c.add_argument(
            "--workers",
            type=int,
            help="server processes, each loading the model (default: deploy.workers)",
        )
        c.add_argument(
            "--prediction-log",
            metavar="DIR",
            help="folder of the prediction log (default: deploy.prediction_log.path)",
        )
    if name == "serve":
        c.add_argument(
            "--version", help="serve this model version (default: the production one)"
        )
    if name == "deploy":
        c.add_argument(
            "--check-only",
            action="store_true",
            help="start the server, smoke-test /invocations, stop it (what CI runs)",
        )
        c.add_argument(
            "--timeout",
            type=float,
            default=120.0,
            help="seconds to wait for the server's /ready (default: 120)",
        )


def history_args(args: argparse.Namespace) -> list[str]:
    """Arguments for ``python -m stages.audit``."""
    out = ["--at", args.at] if args.at else []
    return out + ["--all"] * bool(args.all) + ["--json"] * bool(args.json)


def supported_targets() -> tuple[str, ...]:
    """Every deploy target serves locally with `mlops deploy` (the schema's list);
    cluster targets are also rolled out from git."""
    from runner.schema import schema

    return tuple(schema()["$defs"]["deploy"]["properties"]["target"]["enum"])


def _port(args: argparse.Namespace, env: Mapping[str, str]) -> int | None:
    if args.port is not None or not env.get(PORT_ENV):
        return args.port  # type: ignore[no-any-return]
    try:
        return int(env[PORT_ENV])
    except ValueError as e:
        raise RunError(
            f"${PORT_ENV} must be a port number, not {env[PORT_ENV]!r}"
        ) from e


def serve_args(
    args: argparse.Namespace, deploy: Mapping[str, Any], env: Mapping[str, str]
) -> list[str]:
    """Arguments for ``python -m stages.serving``: flags, then env, then the spec.

    ``deploy`` is ``Spec.deploy``, whose defaults (and ``prediction_log``'s,
    through :func:`runner.spec.nested_defaults`) are the schema's.
    """
    from runner.spec import nested_defaults

    target = deploy["target"]
    if target not in supported_targets():
        raise RunError(f"deploy.target {target!r} is not supported by mlops deploy")
    log = nested_defaults("deploy", "prediction_log", deploy.get("prediction_log"))
    port = _port(args, env)
    out = [
        "--host", str(args.host or deploy["host"]),
        "--port", str(port if port is not None else deploy["port"]),
        "--workers", str(args.workers or deploy["workers"]),
        "--max-request-bytes", str(deploy["max_request_bytes"]),
        "--log-dir", str(args.prediction_log or log["path"]),
        "--log-sample", str(log["sample"]),
        "--log-max-bytes", str(log["max_bytes"]),
        "--log-backups", str(log["backups"]),
    ]  # fmt: skip
    version = getattr(args, "version", None)
    return out + (["--version", str(version)] if version else [])


def params_args(spec: Any) -> list[str]:
    """``--params``: what ``params.yaml`` would hold, for ``python -m stages.serving``.

    A serving pod has the spec but no compiled ``params.yaml`` (and a
    read-only checkout to write one in), so the runner hands it over.
    """
    import json

    from runner import plan as planner

    return ["--params", json.dumps(planner.build(spec).params, sort_keys=True)]


def deploy_args(
    args: argparse.Namespace, deploy: Mapping[str, Any], env: Mapping[str, str]
) -> list[str]:
    """Arguments for ``python -m stages.deploy``: the server's, the wait, the mode."""
    out = [*serve_args(args, deploy, env), "--timeout", str(args.timeout)]
    return out + ["--check-only"] * bool(args.check_only)


def monitor_args(args: argparse.Namespace, spec: Any) -> list[str]:
    """Arguments for ``python -m stages.monitor``: the flags, and ``monitoring:``
    resolved as ``--settings`` JSON (the schema's defaults, the sources it
    names, the prediction log's folder), since params.yaml holds none of it."""
    import json
    import os

    from runner.spec import nested_defaults

    mon = spec.monitoring
    log = nested_defaults("deploy", "prediction_log", spec.deploy.get("prediction_log"))

    def source(key: str) -> dict[str, Any] | None:
        name = mon.get(key)
        if name is None:
            return None
        if name not in spec.data:
            raise RunError(f"monitoring.{key}: no data source {name!r} under data:")
        return {"name": name, "source": spec.data[name]}

    # A flag names the batch over the spec: --current, then --log, then
    # monitoring.current, then the prediction log deploy.prediction_log names.
    if args.current and args.log:
        raise RunError(
            "--current and --log name two different batches to check: give one"
        )
    current = None if args.current or args.log else source("current")
    if args.since and (args.current or current):
        named = f"monitoring.current {mon['current']!r}"
        batch = "--current" if args.current else named
        raise RunError(
            f"--since picks prediction-log entries, but the batch is {batch}, "
            "which is checked whole; pass --log to check the log instead"
        )
    settings = {
        "drift_threshold": mon["drift_threshold"],
        "min_rows": mon["min_rows"],
        "features": mon.get("features") or {},
        "window": mon.get("window"),
        "log_dir": args.log or log["path"],
        "current": current,
        "labels": source("labels"),
    }
    # The module runs in the spec's folder: paths the user typed are from here.
    output = os.path.abspath(args.output)
    given = os.path.abspath(args.current) if args.current else None
    out = ["--settings", json.dumps(settings, sort_keys=True), "--output", output]
    for flag, value in (("--current", given), ("--since", args.since)):
        out += [flag, value] if value else []
    return out + ["--no-report"] * bool(args.no_report)


def run_module(root: Path, module: str, args: list[str]) -> int:
    """Run ``python -m stages.<module>`` in ``root`` and return its exit code.

    On Ctrl-C the module gets the interrupt too; wait for it to stop what it
    started instead of killing it, which would orphan a model server.
    """
    from runner import engine, framework

    # Outside a copy of the framework's repository, -P keeps a folder of the
    # repository (a team's own stages/) from shadowing the installed package.
    safe = [] if framework.is_template(root) else ["-P"]
    with subprocess.Popen(
        [sys.executable, *safe, "-m", f"stages.{module}", *args], cwd=root,
        env=engine.environment(),
    ) as proc:  # fmt: skip
        previous = _forward_sigterm(proc)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            try:
                proc.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
            return 130
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _forward_sigterm(proc: subprocess.Popen[bytes]) -> Any:
    """Pass SIGTERM (a cancelled CI job, `kill`) on to the module; None off-main."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda signum, _: proc.send_signal(signum))
