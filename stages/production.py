"""Which version holds the production alias: ``python -m stages.production``.

Prints one JSON line, ``{"model": ..., "version": ..., "run_id": ...}``, or
``null`` when no version holds it yet. The runner, which never imports
MLflow, reads it to write and check ``deploy/<environment>/release.json``
(``mlops release``). A registry that cannot be read is an error (exit 1), never
"no production model".

``mlops promote`` and ``mlops rollback`` need the same line right after their
module moved the alias: those modules write it themselves (:func:`write_current`,
to the file named by ``runner.release.RELEASE_FLAG``), read afresh with the
client they already hold, instead of a second process paying MLflow's imports
again (3 to 4 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages import common, lookups, promote, run_then_leave
from stages.register import TAG_RUN_ID

KIND = "release"


def current(client: Any, reg: promote.Registry) -> dict[str, str] | None:
    """What holds the production alias now, as the JSON line gives it."""
    version = lookups.by_alias(client, reg.model, reg.production)
    if version is None:
        return None
    return {
        "model": reg.model,
        "version": str(version.version),
        "run_id": (version.tags or {}).get(TAG_RUN_ID) or version.run_id,
    }


def add_flag(ap: argparse.ArgumentParser) -> None:
    """promote's and rollback's ``runner.release.RELEASE_FLAG`` (``mlops``
    passes it; by hand it is optional)."""
    from runner.release import RELEASE_FLAG

    ap.add_argument(
        RELEASE_FLAG, dest="release_file", metavar="FILE",
        help="when done (exit 0), write there what holds the production "
        "alias, as `python -m stages.production` prints it",
    )  # fmt: skip


def done(code: int, path: str | None, client: Any, params: Mapping[str, Any]) -> int:
    """``code``; on 0, first write :func:`current` to ``path`` when one is given."""
    if code == 0 and path:
        lookups.guarded(write_current)(path, client, promote.registry(params))
    return code


def write_current(path: str, client: Any, reg: promote.Registry) -> None:
    """Write :func:`current`'s JSON line to ``path``, whole or not at all."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(json.dumps(current(client, reg)) + "\n", encoding="utf-8")
    os.replace(partial, target)


def main(argv: list[str] | None = None) -> int:
    """Print the production version as JSON; exit 1 if the registry fails."""
    if sys.argv[1:] if argv is None else argv:
        common.warn(KIND, "usage: python -m stages.production (it takes no arguments)")
        return 2
    try:
        import mlflow

        params = common.load_params()
        mlflow.set_tracking_uri(common.tracking_uri(params))
        found = current(mlflow.MlflowClient(), promote.registry(params))
    except common.StageError as e:
        common.warn(KIND, str(e))
        return 1
    sys.stdout.write(json.dumps(found) + "\n")
    return 0


if __name__ == "__main__":
    run_then_leave(main)
