"""``python -m stages.serving.server``: uvicorn on the checked model, no MLflow.

Started by :mod:`stages.serving.cli` (which replaces itself with it) or by
``mlops deploy``, with the checked model described in ``$MLOPS_SERVING_CONFIG``
(see :func:`stages.serving.cli.server_config`). uvicorn runs the app with the
httptools parser (through :mod:`stages.serving.protocol`) and the uvloop event
loop. With ``workers`` above 1 each worker
is a process of its own that loads the model once, and the Prometheus
multiprocess directory is a temporary folder removed on exit.

SIGTERM and Ctrl-C are uvicorn's graceful shutdown: stop accepting, finish the
requests in flight (up to :data:`GRACE_SECONDS`), flush the prediction log,
exit 0.

Limits against slow, idle and greedy clients, per worker (each proven by
tests/reliability/test_serving_abuse.py):

| what | limit | then |
| --- | --- | --- |
| request line and headers | ``protocol.MAX_HEAD_BYTES`` | 431, closed |
| time to send them | ``protocol.HEAD_SECONDS`` | 408, closed |
| request body | ``deploy.max_request_bytes`` | 413, closed |
| time to send the body | ``app.BODY_SECONDS`` | 408, closed |
| idle keep-alive connection | :data:`KEEP_ALIVE_SECONDS` | closed |
| open connections | :data:`MAX_CONNECTIONS` | 503, closed |
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from typing import Any

from stages.serving.app import CONFIG_ENV
from stages.serving.metrics import MULTIPROC_ENV

# How long requests in flight get to finish after SIGTERM.
GRACE_SECONDS = 25
APP = "stages.serving.app:create"
PROTOCOL = "stages.serving.protocol:GuardedHttpTools"  # httptools, with head limits
# An idle keep-alive connection is closed after this (uvicorn's default, stated).
KEEP_ALIVE_SECONDS = 5
# Open connections (or requests in flight) past which a worker answers 503 at
# once instead of taking on more work; idle ones time out (above).
MAX_CONNECTIONS = 1000


def _exit_quietly(signum: int, frame: Any) -> None:
    # uvicorn re-raises the signal it shut down for once it is done; by then the
    # shutdown was graceful, so it ends the process with 0 instead of -15.
    raise SystemExit(0)


def run(config: dict[str, Any]) -> int:
    """Serve until SIGTERM or Ctrl-C."""
    import uvicorn

    workers = int(config["workers"])
    with tempfile.TemporaryDirectory(prefix="mlops-metrics-") as tmp:
        if workers > 1:
            os.environ[MULTIPROC_ENV] = tmp  # inherited by the spawned workers
        else:
            os.environ.pop(MULTIPROC_ENV, None)
        uvicorn.run(
            APP, factory=True, host=config["host"], port=int(config["port"]),
            workers=workers, http=PROTOCOL, loop="uvloop", lifespan="on",
            access_log=False, log_level="warning", server_header=False,
            timeout_graceful_shutdown=GRACE_SECONDS,
            timeout_keep_alive=KEEP_ALIVE_SECONDS, limit_concurrency=MAX_CONNECTIONS,
        )  # fmt: skip
    return 0


def main() -> int:
    """Read the configuration from the environment and serve."""
    signal.signal(signal.SIGTERM, _exit_quietly)
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        sys.stderr.write(
            f"serve: ${CONFIG_ENV} is not set; start the server with `mlops serve`\n"
        )
        return 2
    try:
        return run(json.loads(raw))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
