"""How long MLflow's client may keep trying: bounded retries and timeouts.

MLflow's own defaults retry a failing request 7 times with exponential backoff
(about 4 minutes against a server answering 500), wait up to 120 s for each
answer, and sleep for as long as a ``Retry-After`` header asks. A stage, a
promotion or a history look-up should instead fail within seconds and say
why. :func:`bound_client` sets :data:`CLIENT_DEFAULTS` in the environment
before the first request; a value the user already set wins, so a team behind
a slow or rate-limiting server raises them in its own environment (or in CI's
``env:``). MLflow reads these variables on every request.

Worst case with these values against a server answering 500 or refusing
connections: 4 tries and about 6 s of backoff per call (0 + 2 + 4 s, plus up
to 0.5 s of jitter each), well under 30 s. A server that accepts but never
answers costs up to 4 x 20 s per call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

# Where MLflow's client finds its store; when set, it wins over the spec's.
TRACKING_ENV = "MLFLOW_TRACKING_URI"
# name -> value, as MLflow 3's mlflow/environment_variables.py reads them.
CLIENT_DEFAULTS = {
    # Retries after the first try (MLflow: 7).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    # Seconds; urllib3 waits 0, 2, 4 s before the retries (MLflow: 2).
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    # Up to this many seconds added to each wait (MLflow: 1.0).
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    # Seconds to connect, and between bytes of an answer (MLflow: 120).
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # A 429/503 with ``Retry-After: 3600`` would otherwise sleep an hour.
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
}


def bound_client(env: MutableMapping[str, str] | None = None) -> None:
    """Set each of :data:`CLIENT_DEFAULTS` the environment does not set already."""
    target = os.environ if env is None else env
    for name, value in CLIENT_DEFAULTS.items():
        target.setdefault(name, value)


def chosen_uri(env: Mapping[str, str], configured: str | None) -> str | None:
    """The store a stage tracks to: :data:`TRACKING_ENV` in ``env`` wins over
    the spec's ``configured`` URI (stages.common and the warm server ask)."""
    return env.get(TRACKING_ENV) or configured
