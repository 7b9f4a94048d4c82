"""`mlops release`: git names the model that serves, in `deploy/<environment>/`.

The registry's production alias says which version serves; git must say the
same, because on a cluster git is what Argo CD applies. After `mlops promote`
or `mlops rollback` moves the alias, :func:`sync` writes that version to
`deploy/<environment>/release.json` and renders the environment's manifests
from it (runner.deploy_state); on main the deploy job commits the change
(`mlops release --commit`) and pushes it. :func:`check` (`mlops release
--check`) fails when the two disagree, e.g. after an alias was moved by hand.

Which version holds the alias comes from `python -m stages.production`, so the
runner itself never imports MLflow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from runner import deploy_state
from runner.errors import RunError
from runner.spec import Spec

Say = Callable[[str], None]
# Who commits deploy/ when the environment names nobody (CI sets its own).
BOT_NAME = "mlops"
BOT_EMAIL = "mlops@users.noreply.github.com"


def production(root: Path) -> deploy_state.Release | None:
    """The version the registry's production alias names, or None."""
    from runner import engine

    proc = subprocess.run(
        [sys.executable, "-m", "stages.production"], cwd=root,
        env=engine.environment(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RunError(
            "could not read the production alias from the registry: "
            + (detail[-1] if detail else f"exit {proc.returncode}")
        )
    lines = proc.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as e:
        # Exit 0 without the JSON line is a fault too, never "no production model".
        raise RunError(
            "could not read the production alias from the registry: "
            f"`python -m stages.production` printed {proc.stdout.strip()[-200:]!r}, "
            "not one JSON line"
        ) from e
    if found is None:
        return None
    return deploy_state.Release(
        model=str(found["model"]), version=str(found["version"]),
        run_id=str(found["run_id"]),
    )  # fmt: skip


def _describe(release: deploy_state.Release | None) -> str:
    return f"{release.model} version {release.version}" if release else "no model"


def sync(root: Path, spec: Spec, say: Say, *, commit: bool = False) -> int:
    """Write deploy/<environment>/ for the production version; commit if asked."""
    wanted = production(root)
    environment = spec.deploy["environment"]
    if wanted is None:
        say(f"no version holds the production alias yet: deploy/{environment}/ left")
        return 0
    before = deploy_state.read_release(root, spec)
    written = deploy_state.write_release(root, spec, wanted)
    if not written:
        say(f"deploy/{environment}/ already names {_describe(wanted)}")
        return 0
    say(
        f"deploy/{environment}/ now names {_describe(wanted)} (was {_describe(before)})"
    )
    for path in written:
        say(f"  wrote {path}")
    if commit:
        message = f"Deploy {_describe(wanted)} to {environment}"
        if before is not None:
            message += f" (was version {before.version})"
        _commit(root, written, message)
        say(f"committed: {message}")
    else:
        say("commit it: git is the record of what runs")
    return 0


def _commit(root: Path, paths: list[str], message: str) -> None:
    from runner import engine

    env = engine.environment()
    for key, value in (("NAME", BOT_NAME), ("EMAIL", BOT_EMAIL)):
        for who in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{who}_{key}", value)
    for args in (["add", "--", *paths], ["commit", "-q", "-m", message, "--", *paths]):
        proc = subprocess.run(
            ["git", *args], cwd=root, env=env, capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RunError(f"git {args[0]} failed: {proc.stderr.strip()}")


def check(root: Path, spec: Spec, say: Say) -> int:
    """Exit 1 when deploy/<environment>/ and the production alias disagree."""
    environment = spec.deploy["environment"]
    recorded = deploy_state.read_release(root, spec)
    wanted = production(root)
    if recorded == wanted:
        say(f"deploy/{environment}/ and the registry agree: {_describe(wanted)}")
        return 0
    print(  # noqa: T201
        f"mlops: error: deploy/{environment}/ names {_describe(recorded)}, but the "
        f"registry's production alias names {_describe(wanted)}: run `mlops release` "
        "and commit, or move the alias back",
        file=sys.stderr,
    )
    return 1
