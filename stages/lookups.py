"""What MLflow's errors mean: "absent" only when the registry says so.

A look-up that MLflow refuses (403), that fails (500) or that times out is not
"no such model": reading it as absent would let a ``max_drop`` gate pass
against no production model, or register a version twice. Callers treat
anything but :func:`absent` as a failure and let it propagate.
"""

from __future__ import annotations

from typing import Any


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
