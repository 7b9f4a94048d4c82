"""``python -m stages.serving`` (``mlops serve``): fetch, check, then serve.

The flags carry ``deploy:`` from mlops.yaml, resolved by the runner (flags,
then ``$MLOPS_DEPLOY_PORT``, then the spec, whose defaults are the schema's),
so none has a default here. After the model is fetched and checked this
process replaces itself (``exec``, same pid, so signals still reach it) with
:mod:`stages.serving.server`, which starts without MLflow in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from stages import common
from stages.serving.app import CONFIG_ENV

KIND = "serve"


def add_server_flags(ap: argparse.ArgumentParser) -> None:
    """The server's settings; ``mlops deploy`` passes the same ones."""
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--max-request-bytes", type=int, required=True)
    ap.add_argument("--log-dir", required=True, help="prediction_log.path")
    ap.add_argument("--log-sample", type=float, required=True)
    ap.add_argument("--log-max-bytes", type=int, required=True)
    ap.add_argument("--log-backups", type=int, required=True)


def server_config(
    served: Mapping[str, Any], args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """Everything a worker needs, as one JSON-able mapping."""
    return {
        "served": dict(served),
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "max_request_bytes": args.max_request_bytes,
        "prediction_log": {
            "path": os.path.abspath(args.log_dir),
            "sample": args.log_sample,
            "max_bytes": args.log_max_bytes,
            "backups": args.log_backups,
        },
        "seed": seed,
    }


def server_command() -> list[str]:
    """How to start the server process."""
    return [sys.executable, "-m", "stages.serving.server"]


def server_env(config: Mapping[str, Any]) -> dict[str, str]:
    """This environment plus the server's configuration."""
    return {**os.environ, CONFIG_ENV: json.dumps(config, sort_keys=True)}


def prepare(
    params: Mapping[str, Any], args: argparse.Namespace
) -> tuple[dict[str, Any], Any]:
    """Fetch and check the version; the server configuration and the loaded model."""
    from stages import deploy
    from stages.serving import fetch

    served, model = fetch.prepare(params, args.version, fetch.cache_dir())
    deploy.port_free(args.host, args.port)
    return server_config(served, args, int(common.project(params)["seed"])), model


def main(argv: list[str] | None = None) -> int:
    """Serve the production version (or ``--version N``) until SIGTERM or Ctrl-C."""
    from stages import deploy
    from stages.serving import fetch

    ap = argparse.ArgumentParser(prog="python -m stages.serving")
    ap.add_argument("--version", help="serve this version instead of production")
    ap.add_argument(
        "--params", help="params.yaml's content as JSON (else the file is read)"
    )
    add_server_flags(ap)
    args = ap.parse_args(argv)
    try:
        params = json.loads(args.params) if args.params else common.load_params()
        config, _ = prepare(params, args)
    except common.StageError as e:
        common.warn(KIND, str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    url = deploy.base_url(args.host, args.port)
    common.say(KIND, f"{fetch.describe(config['served'])}")
    common.say(KIND, f"listening on {url} ({args.workers} worker(s)); /ready "
               "answers 200 once the model is loaded; Ctrl-C stops it")  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    command = server_command()
    os.execve(command[0], command, server_env(config))  # noqa: S606 - our own module
    return 0  # pragma: no cover - execve does not return
