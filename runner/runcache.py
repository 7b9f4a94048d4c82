"""Push the DVC run-cache with every output it names, so any machine can restore it.

`dvc push --run-cache` (DVC 3) uploads the run records and the DVC-cached
outputs of the workspace, but not the objects of `cache: false` outputs: the
metrics and plots a stage keeps in git. DVC's run-cache keeps
those locally (it saves them into the cache when it records a run), and
`dvc repro --pull` downloads them when it restores a run elsewhere, but with
nothing on the remote that restore fails and the stage runs again: after a
merge, main would retrain and register a new model version instead of the one
the pull request's report showed, and each Argo task would rerun its
upstream stages.

`python -m runner.runcache [STAGE ...]` does the push and then uploads those
objects for the runs of the given stages (default: all), which is what
`mlops push` runs. It lives in the DVC subprocess, like every other DVC call
of the runner, so the CLI never imports DVC.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _kept_in_git(stage: Any) -> bool:
    return any(not out.use_cache for out in stage.outs)


def _own_stages(repo: Any) -> list[Any]:
    """The stages of the spec's dvc.yaml, not of every dvc.yaml DVC finds."""
    from runner.targets.dvc import DVC_FILE

    return list(repo.stage.collect(DVC_FILE))


def _run_entries(repo: Any, names: set[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The run-cache record (key, value) of each named stage's current run."""
    # DVC names these helpers privately; the exact DVC pin in constraints.txt
    # and tests/test_runcache.py (a real push and restore) guard them.
    from dvc.stage.cache import _can_hash, _get_cache_hash, _get_stage_hash
    from dvc.stage.serialize import to_single_stage_lockfile

    entries, skipped = [], []
    for stage in _own_stages(repo):
        if names and stage.name not in names:
            continue
        if not _kept_in_git(stage):
            continue  # `dvc push` already uploaded all of its outputs
        if not all(f.exists for f in (*stage.deps, *stage.outs)):
            continue  # skipped here, data elsewhere (`dvc repro --allow-missing`)
        if not _can_hash(stage) or not all(o.hash_info for o in stage.outs):
            skipped.append(stage.name)  # never run here, or always_changed
            continue
        lock = to_single_stage_lockfile(stage)
        entries.append((_get_stage_hash(stage), _get_cache_hash(lock)))
    return entries, skipped


def push(root: Path, stages: Sequence[str]) -> list[str]:
    """Push outputs, run records and git-kept outputs; return what was done."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        own = _own_stages(repo)
        known = {s.name for s in own}
        unknown = sorted(set(stages) - known)
        if unknown:
            raise ValueError(
                f"no stage named {', '.join(map(repr, unknown))} in dvc.yaml "
                f"(stages: {', '.join(sorted(known))})"
            )
        targets = [s.addressing for s in own if not stages or s.name in stages]
        pushed = repo.push(targets=targets, run_cache=True)
        entries, skipped = _run_entries(repo, set(stages))
        kept = 0
        for objs in repo.stage_cache.get_used_objs(entries).values():
            result = repo.cloud.push(objs)
            if result.failed:
                raise RuntimeError(
                    f"{len(result.failed)} output file(s) of the run-cache are "
                    "missing from the local cache: run `mlops run` again"
                )
            kept += len(result.transferred)
    lines = [
        f"pushed {pushed} file(s) and run record(s), and {kept} git-kept "
        f"output file(s) of {len(entries)} stage run(s), to the DVC remote"
    ]
    if skipped:
        lines.append(
            f"not in the run-cache (never run here, or always re-run): "
            f"{', '.join(skipped)}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Push for the stages named in argv (all when none); exit 1 on failure."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        for line in push(Path.cwd(), args):
            print(line, flush=True)  # noqa: T201
    except Exception as e:  # DVC's own errors carry the message users need
        print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
