"""Rollback: move production back to an earlier version, recorded like a promotion.

``python -m stages.rollback [--to VERSION]`` (``mlops rollback``). Without
``--to`` production goes back to the version that served before the current
one was last promoted, as the audit trail says. The target must exist in the
registry and differ from the current version. Then, as for a promotion, one
``set_registered_model_alias`` call moves production, an audit entry
(``rolled-back``) is written and HEAD is tagged; ``mlops rollback`` then
rewrites ``deploy/<environment>/`` so that git says the same, to be committed.
A version rolled away from is not promoted again by a later merge that does
not train a new one (see :func:`stages.promote.promote`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from stages import audit, common, lookups, promote, run_then_leave
from stages.register import TAG_RUN_ID

KIND = "rollback"


def target(entries: list[dict[str, Any]], current: str, to: str | None) -> str:
    """The version to go back to: ``--to``, else the one before ``current``."""
    if to is not None:
        if not to.isdigit():
            raise common.StageError(f"--to takes a version number, not {to!r}")
        if to == current:
            raise common.StageError(f"version {to} is already in production")
        return to
    before = audit.promoted_before(entries, current)
    if before is None:
        raise common.StageError(
            f"the audit trail names no version before version {current} (it was the "
            "first one promoted, or promoted by hand): pass --to VERSION"
        )
    return before


def _version(client: Any, model: str, number: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model, number)
    except MlflowException as e:
        if lookups.absent(e):
            raise common.StageError(f"{model} has no version {number}") from e
        raise lookups.failure(e, f"get_model_version({model!r}, {number!r})") from e


def rollback(params: Mapping[str, Any], client: Any, to: str | None) -> int:
    """Move the production alias back and record why; return the exit code."""
    reg = promote.registry(params)
    production = promote.by_alias(client, reg.model, reg.production)
    if production is None:
        raise common.StageError(
            f"no version of {reg.model} holds @{reg.production}: nothing to roll back"
        )
    current = str(production.version)
    entries = audit.model_entries(client, reg.model)
    number = target(entries, current, to)
    version = _version(client, reg.model, number)
    tags = dict(version.tags or {})
    when = audit.now_utc()
    entry = audit.build_entry(
        when=when,
        outcome=audit.ROLLED_BACK,
        reason=f"rolled back from version {current}"
        + (" (--to)" if to is not None else " to the version before it"),
        model=reg.model,
        version=number,
        previous=current,
        version_tags=tags,
        params={},
        metrics={"candidate": promote.tag_metrics(tags), "production": None},
        verdicts=promote.tag_verdicts(tags),
    )
    entry["run_id"] = tags.get(TAG_RUN_ID) or version.run_id
    promote.move_alias(client, reg, number, current)
    common.say(
        KIND,
        f"rolled {reg.model} @{reg.production} back from version {current} to "
        f"version {number}",
    )
    audit.record(client, when, entry)
    common.say(KIND, f"audit entry {audit.tag_key(when)} and {audit.LOG_FILE}")
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    common.say(KIND, promote.git_tag(f"{reg.model}@v{number}-rollback-{stamp}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Roll production back; exit 1 when there is nothing to roll back to."""
    from stages import production

    ap = argparse.ArgumentParser(prog="python -m stages.rollback")
    ap.add_argument("--to", metavar="VERSION", help="the version to serve again")
    production.add_flag(ap)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        import mlflow

        params = common.load_params()
        mlflow.set_tracking_uri(common.tracking_uri(params))
        client = mlflow.MlflowClient()
        code = lookups.guarded(rollback)(params, client, args.to)
        return production.done(code, args.release_file, client, params)
    except common.StageError as e:
        common.warn(KIND, str(e))
        return 1


if __name__ == "__main__":
    run_then_leave(main)
