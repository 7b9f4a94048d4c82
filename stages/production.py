"""Which version holds the production alias: ``python -m stages.production``.

Prints one JSON line, ``{"model": ..., "version": ..., "run_id": ...}``, or
``null`` when no version holds it yet. The runner, which never imports
MLflow, reads it to write and check ``deploy/<environment>/release.json``
(``mlops release``). A registry that cannot be read is an error (exit 1), never
"no production model".
"""

from __future__ import annotations

import json
import sys

from stages import common, promote
from stages.register import TAG_RUN_ID

KIND = "release"


def main(argv: list[str] | None = None) -> int:
    """Print the production version as JSON; exit 1 if the registry fails."""
    if sys.argv[1:] if argv is None else argv:
        common.warn(KIND, "usage: python -m stages.production (it takes no arguments)")
        return 2
    try:
        import mlflow

        params = common.load_params()
        mlflow.set_tracking_uri(common.tracking_uri(params))
        reg = promote.registry(params)
        version = promote.by_alias(mlflow.MlflowClient(), reg.model, reg.production)
    except common.StageError as e:
        common.warn(KIND, str(e))
        return 1
    found = None
    if version is not None:
        found = {
            "model": reg.model,
            "version": str(version.version),
            "run_id": (version.tags or {}).get(TAG_RUN_ID) or version.run_id,
        }
    sys.stdout.write(json.dumps(found) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
