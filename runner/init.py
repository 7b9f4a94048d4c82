"""`mlops init`: start a team's repository from its data and the column to predict.

It writes a commented mlops.yaml (runner.initspec reads the data for it), adds
what git and DVC should ignore, makes the folder a git + DVC repository, and
compiles, so that `mlops validate` and `mlops run` pass with no edit. It checks
everything before it writes anything, and overwrites nothing without --force.
Only the standard library is imported here; pandas is imported when it runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runner import DEFAULT_SPEC, MAIN_BRANCH
from runner.errors import did_you_mean

if TYPE_CHECKING:
    import pandas as pd

    from runner.initspec import Look

# Rows read to write the rules: enough for a faithful look, bounded for a
# file of any size. A larger file's rules are written as warnings.
SAMPLE_ROWS = 100_000
# Local state of runs (MLflow store, local DVC remote), the virtualenv, caches.
GITIGNORE = ("/.mlops/", "/.venv/", "__pycache__/", ".pytest_cache/")
# DVC collects every dvc.yaml it can see: the pipeline is the top-level one,
# not copies under test fixtures, nor anything in the virtualenv or run state.
DVCIGNORE = ("/.mlops/", "/.venv/", "*/**/dvc.yaml")
IGNORE_HEADER = "# Added by mlops init."
# Files that say this is the framework's own source tree (or a copy of it).
FRAMEWORK_MARKERS = ("runner/cli.py", "schema/mlops.schema.json")


class InitError(Exception):
    """A reason init will not go on, naming the file or setting to change."""


@dataclass(frozen=True)
class Options:
    data: str
    target: str
    name: str | None = None
    task: str | None = None
    force: bool = False


def add_flags(c: argparse.ArgumentParser) -> None:
    """The arguments of `mlops init`."""
    c.add_argument(
        "--data", required=True, metavar="FILE",
        help="the training data: a .csv, .parquet or .json file in this repository",
    )  # fmt: skip
    c.add_argument("--target", required=True, help="the column the model predicts")
    c.add_argument(
        "--name", help="project and registered model name (default: the folder's)"
    )
    c.add_argument(
        "--task", choices=("classification", "regression"),
        help="the kind of problem (default: inferred from the target column)",
    )  # fmt: skip
    c.add_argument(
        "--force", action="store_true",
        help="overwrite mlops.yaml and files that mlops compile did not write",
    )  # fmt: skip


def _git_top(cwd: Path) -> Path | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=cwd, capture_output=True, text=True, check=False,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise InitError("git is not installed; mlops needs it") from exc
    return Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None


def repository(cwd: Path) -> Path:
    """The folder to initialise: cwd, if it is a repository's top (or in none)."""
    root = cwd.resolve()
    framework = Path(__file__).resolve().parent.parent
    if (
        root == framework
        or framework in root.parents
        or all((root / m).is_file() for m in FRAMEWORK_MARKERS)
    ):
        raise InitError(
            f"{root} is the mlops framework's own source tree, whose mlops.yaml is "
            "its example; run mlops init in your team's repository"
        )
    top = _git_top(root)
    if top is not None and top != root:
        raise InitError(
            f"{root} is inside the git repository {top}; run mlops init at its top"
        )
    return root


def data_path(root: Path, data: str) -> str:
    """The data file as a path relative to root, POSIX, checked to be in it."""
    path = Path(data) if Path(data).is_absolute() else root / data
    path = Path(os.path.normpath(path))
    if not path.resolve().is_relative_to(root):
        raise InitError(
            f"--data {data}: outside the repository {root}; copy the file into it "
            "(or `dvc import` it) so that every run reads the same data"
        )
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        if path.with_name(path.name + ".dvc").is_file():
            what += f" (DVC tracks it: `dvc pull {path.name}.dvc` first)"
        raise InitError(f"--data {data}: {what}")
    return path.relative_to(root).as_posix()


def _formats() -> tuple[str, ...]:
    from runner.schema import schema

    return tuple(schema()["$defs"]["source"]["properties"]["format"]["enum"])


def read(root: Path, rel: str) -> Look:
    """The data's first SAMPLE_ROWS rows, read as `ingest` will read the file."""
    from runner.initspec import Look

    fmt = Path(rel).suffix.lower().lstrip(".")
    if fmt not in _formats():
        *most, last = (f".{f}" for f in _formats())
        kinds = f"{', '.join(most)} or {last}"
        raise InitError(f"{rel}: cannot tell its format; use a {kinds} file")
    path = root / rel
    try:
        frame, more = _read(path, fmt)
    except Exception as exc:  # readers raise many types; each means unreadable
        detail = str(exc).strip().splitlines()
        raise InitError(
            f"{rel}: cannot read it as {fmt.upper()}: "
            f"{detail[0] if detail else type(exc).__name__}"
        ) from exc
    if frame.empty or len(frame.columns) < 2:  # noqa: PLR2004
        raise InitError(
            f"{rel}: {len(frame)} rows x {len(frame.columns)} columns; "
            "a model needs rows, a target column and at least one feature"
        )
    return Look(frame=frame, path=rel, sampled=more)


def _read(path: Path, fmt: str) -> tuple[pd.DataFrame, bool]:
    import pandas as pd

    if fmt == "csv":
        frame = pd.read_csv(path, nrows=SAMPLE_ROWS + 1)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=SAMPLE_ROWS + 1)
        first = next(batches, None)
        frame = first.to_pandas() if first is not None else pd.DataFrame()
    else:
        if path.stat().st_size > 100 * 2**20:  # read whole: bound it by size
            raise ValueError("over 100 MiB of JSON; convert it to CSV or Parquet")
        frame = pd.read_json(path)
    more = len(frame) > SAMPLE_ROWS
    return frame.iloc[:SAMPLE_ROWS], more


def check_target(look: Look, target: str) -> None:
    """A target init can write a spec for: present, labelled, not constant."""
    columns = [str(c) for c in look.frame.columns]
    if target not in columns:
        raise InitError(
            f"{look.path}: no column {target!r}{did_you_mean(target, columns)} "
            f"(columns: {', '.join(columns[:20])})"
        )
    series = look.frame[target]
    missing = int(series.isna().sum())
    if missing:
        raise InitError(
            f"{look.path}: column {target!r} is missing in {missing} rows; a model "
            "learns only from labelled rows, so drop or fill them first"
        )
    if series.nunique() < 2:  # noqa: PLR2004
        raise InitError(
            f"{look.path}: column {target!r} has one value ({series.iloc[0]!r}) on "
            "every row; there is nothing to predict"
        )


def decide_task(look: Look, target: str, task: str | None) -> tuple[str, str]:
    """The task and the reason for it; --task overrides the inference."""
    import pandas as pd

    from runner.initspec import REGRESSION, infer_task

    series = look.frame[target]
    if task is None:
        return infer_task(series)
    numeric = pd.api.types.is_numeric_dtype(series.dtype)
    if task == REGRESSION and (not numeric or pd.api.types.is_bool_dtype(series)):
        raise InitError(
            f"{look.path}: column {target!r} is not numeric; --task regression "
            "needs numbers"
        )
    return task, "set by --task"


def _generated(path: Path) -> bool:
    from runner.write import HEADER

    try:
        with path.open("rb") as f:
            return f.read(len(HEADER)) == HEADER.encode()
    except OSError:
        return False


def would_overwrite(root: Path, text: str, force: bool) -> None:
    """Refuse (without --force) to replace the spec or a file we did not write."""
    from runner import compile as compiler
    from runner import spec

    if force:
        return
    if (root / DEFAULT_SPEC).exists():
        raise InitError(
            f"{DEFAULT_SPEC} exists; edit it, or pass --force to write a new one"
        )
    for rel in compiler.compile_to(spec.parse(text, DEFAULT_SPEC), root, check=True):
        if (root / rel).exists() and not _generated(root / rel):
            raise InitError(
                f"{rel} exists and was not written by mlops compile; "
                "move it away, or pass --force to overwrite it"
            )


def add_ignores(path: Path, patterns: Sequence[str]) -> list[str]:
    """Append the patterns the file lacks (once, under a header); return them."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    have = {line.strip() for line in text.splitlines()}
    new = [p for p in patterns if p not in have]
    if new:
        block = [] if IGNORE_HEADER in have else [IGNORE_HEADER]
        lead = "" if not text or text.endswith("\n") else "\n"
        from runner.write import write_atomic

        write_atomic(path, text + lead + "\n".join([*block, *new]) + "\n")
    return new


def run(opts: Options, cwd: Path, say: Callable[[str], None]) -> str:
    """Check everything, then write the spec and the ignore files; return the
    data's path in the repository.

    The caller compiles and sets up git and DVC next, as `mlops run` does.
    """
    from runner import initspec
    from runner.write import write_atomic

    root = repository(cwd)
    rel = data_path(root, opts.data)
    look = read(root, rel)
    check_target(look, opts.target)
    task, why = decide_task(look, opts.target, opts.task)
    name = opts.name or initspec.safe_name(root.name, "model")
    if name != initspec.safe_name(name, ""):
        raise InitError(
            f"--name {name!r}: use lowercase letters, digits and dashes, "
            "starting with a letter (at most 40)"
        )
    text = initspec.render(look, opts.target, name, task, why)
    would_overwrite(root, text, opts.force)
    if _git_top(root) is None:
        subprocess.run(["git", "init", "-q", "-b", MAIN_BRANCH], cwd=root, check=True)
        say("initialised git")
    write_atomic(root / DEFAULT_SPEC, text)
    rows = f"{'the first' if look.sampled else 'all'} {len(look.frame)} rows"
    say(f"wrote {DEFAULT_SPEC}: {task} of {opts.target!r} ({why}); rules from {rows}")
    for ignore, patterns in ((".gitignore", GITIGNORE), (".dvcignore", DVCIGNORE)):
        if added := add_ignores(root / ignore, patterns):
            say(f"added {' '.join(added)} to {ignore}")
    return rel


def next_steps(rel: str) -> str:
    """What to do after init, for its last line."""
    return (
        f"next: mlops run; then commit {DEFAULT_SPEC}, {rel} (or `dvc add` it if "
        "large), .gitignore, .dvcignore, .dvc/ and the generated files"
    )
