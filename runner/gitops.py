"""`mlops release`: git names the model that serves, in `deploy/<environment>/`.

The registry's production alias says which version serves; git must say the
same, because on a cluster git is what Argo CD applies. After `mlops promote`
or `mlops rollback` moves the alias, :func:`sync` writes that version to
`deploy/<environment>/release.json` and renders the environment's manifests
from it (runner.deploy_state); on main the deploy job commits the change
(`mlops release --commit`) and pushes it. :func:`check` (`mlops release
--check`) fails when the two disagree, e.g. after an alias was moved by hand.

Which version holds the alias comes from `python -m stages.production`, so the
runner itself never imports MLflow; after a promotion or a rollback
(:func:`after`), from the same line written by the module that moved the alias,
which saves a second process and its MLflow imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
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
    return _parse(proc.stdout, "`python -m stages.production` printed")


def _parse(text: str, source: str) -> deploy_state.Release | None:
    lines = text.strip().splitlines()
    try:
        found = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as e:
        # Exit 0 without the JSON line is a fault too, never "no production model".
        raise RunError(
            "could not read the production alias from the registry: "
            f"{source} {text.strip()[-200:]!r}, not one JSON line"
        ) from e
    if found is None:
        return None
    return deploy_state.Release(
        model=str(found["model"]), version=str(found["version"]),
        run_id=str(found["run_id"]),
    )  # fmt: skip


def _describe(release: deploy_state.Release | None) -> str:
    return f"{release.model} version {release.version}" if release else "no model"


def after(root: Path, spec: Spec, say: Say, module: str, argv: list[str]) -> int:
    """Run ``python -m stages.<module>`` (promote or rollback), then :func:`sync`
    to what holds the production alias once it is done, as the module itself
    wrote it (to the file its ``runner.release.RELEASE_FLAG`` names)."""
    from runner import release

    with tempfile.TemporaryDirectory(prefix="mlops-release-") as tmp:
        line = Path(tmp) / "production.json"
        flag = release.RELEASE_FLAG
        code = release.run_module(root, module, [*argv, flag, str(line)])
        if code != 0:
            return code
        text = line.read_text(encoding="utf-8") if line.exists() else ""
    source = f"`python -m stages.{module}` exited 0 and wrote"
    return write(root, spec, say, _parse(text, source))


def sync(root: Path, spec: Spec, say: Say, *, commit: bool = False) -> int:
    """Write deploy/<environment>/ for the production version; commit if asked."""
    return write(root, spec, say, production(root), commit=commit)


def write(
    root: Path, spec: Spec, say: Say, wanted: deploy_state.Release | None,
    *, commit: bool = False,
) -> int:  # fmt: skip
    """Write deploy/<environment>/ for ``wanted``, as the registry named it."""
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
